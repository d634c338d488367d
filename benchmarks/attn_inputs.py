"""Inputs of the multi-scale deformable attention benchmark: the standard Deformable DETR shapes.

Deformable DETR on an 800x1333 image: four levels, S = 22,223 values, M = 8 heads of D = 32
channels, P = 4 points per level. Sampling locations are either "realistic" (reference points plus
small offsets, what a trained model produces) or "uniform" (uniform in [0, 1], no locality at all:
the worst case for caches).
"""
from dataclasses import dataclass

import torch

LEVELS = ((100, 167), (50, 84), (25, 42), (13, 21))  # (H, W)
NUM_VALUES = sum(h * w for h, w in LEVELS)             # S = 22,223
HEADS, CHANNELS, POINTS = 8, 32, 4                      # M, D, P
OFFSET_SIGMA_PIXELS = 2.0  # spread of the realistic offsets, in pixels of each level
LOCATION_KINDS = ("realistic", "uniform")


@dataclass(frozen=True)
class Case:
    name: str
    role: str     # "encoder": every value position is a query; "decoder": object queries
    batch: int    # N
    queries: int  # Lq

    @property
    def multiply_adds(self):
        """N * Lq * M * L * P bilinear samples, each 4 taps of D multiply-adds."""
        return self.batch * self.queries * HEADS * len(LEVELS) * POINTS * 4 * CHANNELS


CASES = (
    Case("encoder N=1", "encoder", 1, NUM_VALUES),
    Case("encoder N=2", "encoder", 2, NUM_VALUES),
    Case("decoder N=2 Lq=300", "decoder", 2, 300),
    Case("decoder N=2 Lq=900", "decoder", 2, 900),
)


def level_layout(device):
    """spatial_shapes int64 [L, 2] and level_start_index int64 [L]."""
    spatial_shapes = torch.tensor(LEVELS, dtype=torch.int64, device=device)
    areas = spatial_shapes.prod(1)
    return spatial_shapes, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def encoder_reference_points():
    """[S, 2]: each value position's own pixel centre, normalised (x, y), as Deformable DETR's encoder
    uses it (the same point is then looked up on every level)."""
    points = []
    for height, width in LEVELS:
        y, x = torch.meshgrid((torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width,
                              indexing="ij")
        points.append(torch.stack([x, y], -1).view(-1, 2))
    return torch.cat(points)


def sampling_locations(case, kind, generator):
    """[N, Lq, M, L, P, 2] float32 (x, y) of the given kind."""
    shape = (case.batch, case.queries, HEADS, len(LEVELS), POINTS, 2)
    if kind == "uniform":
        return torch.rand(shape, generator=generator)
    if case.role == "encoder":
        reference = encoder_reference_points().expand(case.batch, -1, -1)       # [N, Lq, 2]
    else:
        reference = torch.rand(case.batch, case.queries, 2, generator=generator)  # [N, Lq, 2]
    level_size = torch.tensor(LEVELS, dtype=torch.float32).flip(-1)              # [L, 2] (W, H)
    offsets = torch.randn(shape, generator=generator) * OFFSET_SIGMA_PIXELS / level_size[:, None, :]
    return reference[:, :, None, None, None, :] + offsets


def make_inputs(case, kind, dtype, device, seed=0):
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) and a
    fixed upstream gradient [N, Lq, M * D] for the backward."""
    generator = torch.Generator().manual_seed(seed)
    value = torch.randn(case.batch, NUM_VALUES, HEADS, CHANNELS, generator=generator)
    locations = sampling_locations(case, kind, generator)
    logits = torch.randn(case.batch, case.queries, HEADS, len(LEVELS) * POINTS, generator=generator)
    weights = logits.softmax(-1).view(case.batch, case.queries, HEADS, len(LEVELS), POINTS)
    grad_output = torch.randn(case.batch, case.queries, HEADS * CHANNELS, generator=generator)
    spatial_shapes, level_start_index = level_layout(device)
    inputs = (value.to(device, dtype), spatial_shapes, level_start_index, locations.to(device, dtype),
              weights.to(device, dtype))
    return inputs, grad_output.to(device, dtype)


def compulsory_bytes(inputs):
    """Bytes a kernel must move at least: value, locations and weights read once, output written once."""
    value, _, _, locations, weights = inputs
    N, Lq, M, _, _ = weights.shape
    output_bytes = N * Lq * M * value.shape[-1] * value.element_size()
    return sum(t.numel() * t.element_size() for t in (value, locations, weights)) + output_bytes
