"""Deformable DETR's transformer (Zhu et al. 2020): multi-scale deformable attention (MSDA,
`detrx.nn.MSDeformAttn` on the compiled op) replaces the encoder's self-attention and the
decoder's cross-attention. Each query samples a few points around its reference point on every
level instead of attending to all S tokens. With box refinement every decoder layer refines the
previous layer's box, which becomes the next layer's (4-d) reference.
"""
import copy
from typing import NamedTuple

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

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask):
        """src, pos [B, S, C]; reference_points [B, S, L, 2] -> [B, S, C]."""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
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
                padding_mask, self_attn_mask=None):
        """tgt, query_pos [B, Q, C]; reference_points [B, Q, L, 2 or 4] -> [B, Q, C].

        The DN mask goes to the self-attention only: MSDA cross-attention samples the image memory
        for each query on its own, so no query can see another there.
        """
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, attn_mask=self_attn_mask)[0]))
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes,
                                   level_start_index, padding_mask)
        return self.ffn(self.norm2(tgt + self.dropout2(attended)))


def token_levels(level_start, num_tokens):
    """level_start [L], num_tokens S -> [S] the level of every flattened token (tensor ops only,
    so the level sizes may be unknown until run time, as in an exported graph)."""
    tokens = torch.arange(num_tokens, device=level_start.device)
    return (tokens[:, None] >= level_start[None, 1:]).sum(1)  # empty levels are skipped


def pixel_centres(spatial_shapes, level_start, valid_ratios, num_tokens):
    """Pixel centres of every level, normalised by the level's unpadded extent: spatial_shapes
    [L, 2], level_start [L], valid_ratios [B, L, 2] (w, h), num_tokens S -> [B, S, 2] (x, y);
    above 1 in the padding."""
    level = token_levels(level_start, num_tokens)  # [S]
    index = torch.arange(num_tokens, device=level_start.device) - level_start[level]  # row-major in its level
    h, w = spatial_shapes[level].unbind(-1)  # [S]
    x = (index % w + 0.5)[None] / (valid_ratios[:, level, 0] * w)  # [B, S]
    y = (index // w + 0.5)[None] / (valid_ratios[:, level, 1] * h)
    return torch.stack([x, y], -1)


def encoder_reference_points(spatial_shapes, level_start, valid_ratios, num_tokens):
    """The pixel centres seen from every level: -> [B, S, L, 2] (x, y)."""
    centres = pixel_centres(spatial_shapes, level_start, valid_ratios, num_tokens)
    return centres[:, :, None] * valid_ratios[:, None]


class EncodedImages(NamedTuple):
    """The encoder's output and the layout the decoder needs."""
    memory: torch.Tensor           # [B, S, C]
    padding_mask: torch.Tensor     # [B, S] True = padding
    spatial_shapes: torch.Tensor   # [L, 2] (h, w)
    level_start: torch.Tensor      # [L]
    valid_ratios: torch.Tensor     # [B, L, 2] (w, h) unpadded fraction of each level


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
        [L], valid_ratios [B, L, 2]."""
        shapes = torch.tensor([src.shape[-2:] for src in srcs], dtype=torch.int64, device=srcs[0].device)
        level_start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i] for i, p in enumerate(pos_embeds)], 1)
        mask = torch.cat([m.flatten(1) for m in masks], 1)
        valid = torch.stack([torch.stack([(~m[:, 0, :]).sum(1), (~m[:, :, 0]).sum(1)], -1).float()
                             / torch.tensor([m.shape[2], m.shape[1]], device=m.device) for m in masks], 1)
        return src, pos, mask, shapes, level_start, valid

    def encode(self, srcs, masks, pos_embeds):
        """Per level [B, C, H_l, W_l] features, [B, H_l, W_l] masks, [B, C, H_l, W_l] positions -> EncodedImages."""
        src, pos, mask, shapes, level_start, valid_ratios = self.flatten(srcs, masks, pos_embeds)
        enc_refs = encoder_reference_points(shapes, level_start, valid_ratios, src.shape[1])  # [B, S, L, 2]
        memory = src
        for layer in self.encoder:
            memory = layer(memory, pos, enc_refs, shapes, level_start, mask)
        return EncodedImages(memory, mask, shapes, level_start, valid_ratios)

    def decode(self, encoded, tgt, query_pos, reference_points, self_attn_mask=None, bbox_embed=None):
        """tgt, query_pos [B, Q, C]; reference_points [B, Q, 2 or 4]; bbox_embed: per-layer box heads
        for iterative refinement, or None -> (hs [L_dec, B, Q, C], references: list of L_dec
        [B, Q, 2 or 4], the reference each layer's box is predicted relative to)."""
        memory, mask, shapes, level_start, valid_ratios = encoded
        hs, references, out, reference = [], [], tgt, reference_points
        for i, layer in enumerate(self.decoder):
            scale = valid_ratios if reference.shape[-1] == 2 else torch.cat([valid_ratios, valid_ratios], -1)
            out = layer(out, query_pos, reference[:, :, None] * scale[:, None], memory, shapes,
                        level_start, mask, self_attn_mask)
            hs.append(out)
            references.append(reference)
            if bbox_embed is not None:  # iterative refinement; gradients do not flow through references
                reference = refine_boxes(bbox_embed[i](out), reference).detach()
        return torch.stack(hs), references


def build_deformable_transformer(args):
    return DeformableTransformer(args.d_model, args.nheads, args.enc_layers, args.dec_layers,
                                 args.dim_feedforward, args.dropout, args.num_feature_levels, args.n_points)
