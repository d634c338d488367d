"""Deformable DETR's transformer (Zhu et al. 2020): multi-scale deformable attention (MSDA,
`detrx.nn.MSDeformAttn` on the compiled op) replaces the encoder's self-attention and the
decoder's cross-attention. Each query samples a few points around its reference point on every
level instead of attending to all S tokens. With box refinement every decoder layer refines the
previous layer's box, which becomes the next layer's (4-d) reference.
"""
import copy
from typing import NamedTuple, Optional

import torch
from torch import nn

from detrx.models.transformer import FeedForward
from detrx.nn import MSDeformAttn


def inverse_sigmoid(x, eps=1e-5):
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def refine_boxes(delta, reference):
    """delta [..., 4] (logit space), reference [..., 2 or 4] in [0, 1] -> boxes [..., 4] in [0, 1]."""
    if reference.shape[-1] == 4:
        return (delta + inverse_sigmoid(reference)).sigmoid()
    return torch.cat([delta[..., :2] + inverse_sigmoid(reference), delta[..., 2:]], -1).sigmoid()


class DeformableEncoderLayer(nn.Module):
    def __init__(self, d_model, nhead, n_levels, n_points, dim_feedforward, dropout):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, nhead, n_points)
        self.dropout, self.norm = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask,
                spatial_shapes_list=None):
        """src, pos [B, S, C]; reference_points [B, S, L, 2] -> [B, S, C]. spatial_shapes_list: the
        (h, w) of spatial_shapes as ints, which spares the op reading the tensor on the host."""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask,
                                  spatial_shapes_list)
        return self.ffn(self.norm(src + self.dropout(attended)))


class DeformableDecoderLayer(nn.Module):
    def __init__(self, d_model, nhead, n_levels, n_points, dim_feedforward, dropout):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = MSDeformAttn(d_model, n_levels, nhead, n_points)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, tgt, query_pos, reference_points, memory, spatial_shapes, level_start_index,
                padding_mask, self_attn_mask=None, spatial_shapes_list=None):
        """tgt, query_pos [B, Q, C]; reference_points [B, Q, L, 2 or 4] -> [B, Q, C].

        The DN mask goes to the self-attention only: MSDA cross-attention samples the image memory
        for each query on its own, so no query can see another there.
        """
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, attn_mask=self_attn_mask)[0]))
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes,
                                   level_start_index, padding_mask, spatial_shapes_list)
        return self.ffn(self.norm2(tgt + self.dropout2(attended)))


def pixel_centres(level_shapes, valid_ratios):
    """Pixel centres of every level, normalised by the level's unpadded extent: level_shapes
    [(h, w)] * L ints, valid_ratios [B, L, 2] (w, h) -> [B, S, 2] (x, y); above 1 in the padding."""
    points = []
    for level, (h, w) in enumerate(level_shapes):
        ys, xs = torch.meshgrid(torch.arange(h, device=valid_ratios.device) + 0.5,
                                torch.arange(w, device=valid_ratios.device) + 0.5, indexing="ij")
        x = xs.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * w)  # [B, h*w]
        y = ys.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * h)
        points.append(torch.stack([x, y], -1))
    return torch.cat(points, 1)


def encoder_reference_points(level_shapes, valid_ratios):
    """The pixel centres seen from every level: -> [B, S, L, 2] (x, y)."""
    return pixel_centres(level_shapes, valid_ratios)[:, :, None] * valid_ratios[:, None]


class EncodedImages(NamedTuple):
    """The encoder's output and the layout the decoder needs."""
    memory: torch.Tensor           # [B, S, C]
    padding_mask: torch.Tensor     # [B, S] True = padding
    spatial_shapes: torch.Tensor   # [L, 2] (h, w)
    level_start: torch.Tensor      # [L]
    valid_ratios: torch.Tensor     # [B, L, 2] (w, h) unpadded fraction of each level
    level_shapes: list             # [(h, w)] * L, spatial_shapes as ints


class ObjectQueries(NamedTuple):
    """The decoder's queries, learned or selected from the encoder (two-stage)."""
    tgt: torch.Tensor                       # [B, N, C] content stream
    query_pos: torch.Tensor                 # [B, N, C] query positions
    reference_points: torch.Tensor          # [B, N, 2] (x, y), or [B, N, 4] boxes with two-stage
    encoder_outputs: Optional[dict]         # two-stage: "pred_logits" [B, S, K], "pred_boxes" [B, S, 4]


class DeformableTransformer(nn.Module):
    """MSDA encoder over the flattened levels (`encode`), then the decoder over the queries (`decode`);
    the detector picks the queries in between (learned, or two-stage from the encoder's output)."""

    def __init__(self, d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=1024, dropout=0.1, num_feature_levels=4, n_points=4):
        super().__init__()
        self.d_model, self.nhead = d_model, nhead
        enc = DeformableEncoderLayer(d_model, nhead, num_feature_levels, n_points, dim_feedforward, dropout)
        dec = DeformableDecoderLayer(d_model, nhead, num_feature_levels, n_points, dim_feedforward, dropout)
        self.encoder = nn.ModuleList([copy.deepcopy(enc) for _ in range(num_encoder_layers)])
        self.decoder = nn.ModuleList([copy.deepcopy(dec) for _ in range(num_decoder_layers)])
        self.level_embed = nn.Parameter(torch.randn(num_feature_levels, d_model) * 0.02)

    def flatten(self, srcs, masks, pos_embeds):
        """Multi-scale maps -> src, pos [B, S, C], mask [B, S], spatial_shapes [L, 2], level_start
        [L], valid_ratios [B, L, 2], level_shapes [(h, w)] * L."""
        level_shapes = [tuple(src.shape[-2:]) for src in srcs]
        shapes = torch.tensor(level_shapes, dtype=torch.int64, device=srcs[0].device)
        level_start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i] for i, p in enumerate(pos_embeds)], 1)
        mask = torch.cat([m.flatten(1) for m in masks], 1)
        valid = torch.stack([torch.stack([(~m[:, 0, :]).sum(1), (~m[:, :, 0]).sum(1)], -1).float()
                             / torch.tensor([m.shape[2], m.shape[1]], device=m.device) for m in masks], 1)
        return src, pos, mask, shapes, level_start, valid, level_shapes

    def encode(self, srcs, masks, pos_embeds):
        """Per level [B, C, H_l, W_l] features, [B, H_l, W_l] masks, [B, C, H_l, W_l] positions -> EncodedImages."""
        src, pos, mask, shapes, level_start, valid_ratios, level_shapes = self.flatten(srcs, masks, pos_embeds)
        enc_refs = encoder_reference_points(level_shapes, valid_ratios)  # [B, S, L, 2]
        memory = src
        for layer in self.encoder:
            memory = layer(memory, pos, enc_refs, shapes, level_start, mask, level_shapes)
        return EncodedImages(memory, mask, shapes, level_start, valid_ratios, level_shapes)

    def decode(self, encoded, tgt, query_pos, reference_points, self_attn_mask=None, bbox_embed=None):
        """tgt, query_pos [B, Q, C]; reference_points [B, Q, 2 or 4]; bbox_embed: per-layer box heads
        for iterative refinement, or None -> (hs [L_dec, B, Q, C], references: list of L_dec
        [B, Q, 2 or 4], the reference each layer's box is predicted relative to)."""
        memory, mask, shapes, level_start, valid_ratios, level_shapes = encoded
        hs, references, out, reference = [], [], tgt, reference_points
        for i, layer in enumerate(self.decoder):
            scale = valid_ratios if reference.shape[-1] == 2 else torch.cat([valid_ratios, valid_ratios], -1)
            out = layer(out, query_pos, reference[:, :, None] * scale[:, None], memory, shapes,
                        level_start, mask, self_attn_mask, level_shapes)
            hs.append(out)
            references.append(reference)
            if bbox_embed is not None:  # iterative refinement; gradients do not flow through references
                reference = refine_boxes(bbox_embed[i](out), reference).detach()
        return torch.stack(hs), references


def build_deformable_transformer(args):
    return DeformableTransformer(args.d_model, args.nheads, args.enc_layers, args.dec_layers,
                                 args.dim_feedforward, args.dropout, args.num_feature_levels, args.n_points)
