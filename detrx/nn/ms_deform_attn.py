"""The multi-scale deformable attention module of Deformable DETR, on detrx's compiled op."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from detrx.ops import ms_deform_attn, ms_deform_attn_reference


class MSDeformAttn(nn.Module):
    """Each query looks at `n_points` learned offsets around its reference point on each of
    `n_levels` feature maps, per head, and mixes the bilinear samples with learned weights.

    Args:
        d_model: channels of queries and values (divisible by n_heads).
        n_levels, n_heads, n_points: L, M, P of the op.
        use_reference: run the pure-PyTorch grid_sample reference instead of the compiled op.
    """

    def __init__(self, d_model=256, n_levels=4, n_heads=8, n_points=4, use_reference=False):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.use_reference = use_reference
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        """The paper's initialisation: head h starts sampling along direction 2*pi*h/M, point p at
        distance p+1 (in pixels of each level), with uniform attention over all samples."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads) * (2.0 * math.pi / self.n_heads)  # [M], the default float dtype
        directions = torch.stack([angles.cos(), angles.sin()], 1)  # [M, 2]
        directions = directions / directions.abs().max(1, keepdim=True).values  # onto the unit square
        distances = torch.arange(1, self.n_points + 1)  # [P] int64, promoted by the product
        grid = directions[:, None, None, :] * distances[None, None, :, None]  # [M, 1, P, 2]
        grid = grid.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(self, query, reference_points, input_flatten, input_spatial_shapes,
                input_level_start_index, input_padding_mask=None, input_spatial_shapes_list=None):
        """
        Args:
            query:                    [N, Lq, C]
            reference_points:         [N, Lq, L, 2] normalised (x, y), or [N, Lq, L, 4] boxes (cx, cy, w, h)
            input_flatten:            [N, S, C] the L levels flattened and concatenated
            input_spatial_shapes:     int64 [L, 2] (H, W) of each level
            input_level_start_index:  int64 [L]
            input_padding_mask:       [N, S] bool, True at padding (those values are zeroed)
            input_spatial_shapes_list: the same (H, W) as Python ints, if known: the op then checks
                                      the layout on the host and never reads input_spatial_shapes there
        Returns:
            [N, Lq, C]
        """
        N, Lq, C = query.shape
        S = input_flatten.shape[1]
        M, L, P = self.n_heads, self.n_levels, self.n_points
        if C != self.d_model or input_flatten.shape != (N, S, C):
            raise ValueError(f"MSDeformAttn: query must be [N, Lq, {self.d_model}] and input_flatten "
                             f"[N, S, {self.d_model}], got {tuple(query.shape)} and {tuple(input_flatten.shape)}")
        if reference_points.dim() != 4 or reference_points.shape[:3] != (N, Lq, L) \
                or reference_points.shape[3] not in (2, 4):
            raise ValueError(f"MSDeformAttn: reference_points must be [N, Lq, L, 2] or [N, Lq, L, 4] with "
                             f"N={N}, Lq={Lq}, L={L}, got {tuple(reference_points.shape)}")
        if input_padding_mask is not None and input_padding_mask.shape != (N, S):
            raise ValueError(f"MSDeformAttn: input_padding_mask must be [N, S] = [{N}, {S}], "
                             f"got {tuple(input_padding_mask.shape)}")

        value = self.value_proj(input_flatten)  # [N, S, C]
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, S, M, C // M)
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        weights = self.attention_weights(query).view(N, Lq, M, L * P).softmax(-1).view(N, Lq, M, L, P)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (W, H)
            level_size = input_spatial_shapes.flip(1)  # [L, 2] (W, H), int64: the division promotes it
            locations = reference_points[:, :, None, :, None, :] + offsets / level_size[None, None, None, :, None, :]
        else:
            # offsets are relative to the box: P points spread over its half-size
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5)
        op = ms_deform_attn_reference if self.use_reference else ms_deform_attn
        output = op(value, input_spatial_shapes, input_level_start_index, locations.to(value.dtype),
                    weights.to(value.dtype), spatial_shapes_list=input_spatial_shapes_list)  # [N, Lq, C]
        return self.output_proj(output)
