"""DETR's transformer: post-norm encoder over the flattened feature map, decoder over the queries.

Batch-first throughout. The positional encodings are added to queries and keys (never to values)
in every layer, as in DETR. The decoder returns every layer's (normed) output for auxiliary losses
and takes an optional self-attention mask (DN-DETR's denoising mask). `deformable_cross_layers`
names decoder layers whose cross-attention is deformable attention over the single-scale memory
(`DeformableCrossAttention`) instead of dense attention; everything else stays DETR's.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from detrx.nn import MSDeformAttn


def _clones(module, n):
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear -> dropout, with residual and post-norm."""

    def __init__(self, d_model, dim_feedforward, dropout):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x):
        return self.norm(x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(x))))))


class EncoderLayer(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, dropout):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.dropout, self.norm = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, src, pos, padding_mask):
        """src, pos [B, S, C]; padding_mask [B, S] (True = padding) -> [B, S, C]."""
        q = k = src + pos
        src = self.norm(src + self.dropout(self.self_attn(q, k, src, key_padding_mask=padding_mask)[0]))
        return self.ffn(src)


def valid_ratios(padding_mask, memory_shape):
    """padding_mask [B, H*W] (True = padding), memory_shape (H, W) -> [B, 2] (w, h): the unpadded
    fraction of the map's width and height."""
    h, w = memory_shape
    valid = ~padding_mask.view(-1, h, w)
    return torch.stack([valid[:, 0, :].sum(1) / w, valid[:, :, 0].sum(1) / h], -1).float()


class DeformableCrossAttention(nn.Module):
    """Cross-attention as single-level deformable attention (`detrx.nn.MSDeformAttn`): each query
    samples `n_points` points per head around a reference point predicted from its position
    embedding (a linear layer and a sigmoid, as Deformable DETR's decoder does without two-stage),
    in the unpadded part of the memory map. The memory enters as values, without positions."""

    def __init__(self, d_model, nhead, n_points):
        super().__init__()
        self.reference_points = nn.Linear(d_model, 2)
        self.attn = MSDeformAttn(d_model, n_levels=1, n_heads=nhead, n_points=n_points)

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)
        self.attn.reset_parameters()

    def forward(self, tgt, query_pos, memory, memory_shape, padding_mask):
        """tgt, query_pos [B, Q, C]; memory [B, S, C] with S = H*W; memory_shape (H, W) ints;
        padding_mask [B, S] -> [B, Q, C]."""
        h, w = memory_shape
        reference = self.reference_points(query_pos).sigmoid()  # [B, Q, 2] (x, y) in the unpadded map
        reference = reference[:, :, None] * valid_ratios(padding_mask, memory_shape)[:, None, None]  # [B, Q, 1, 2]
        shapes = torch.tensor([[h, w]], dtype=torch.int64, device=memory.device)  # [1, 2]
        start = shapes.new_zeros(1)  # [1]
        return self.attn(tgt + query_pos, reference, memory, shapes, start, padding_mask, [(h, w)])


class DecoderLayer(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, dropout, deformable_cross=False, n_points=4):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        if deformable_cross:
            self.cross_attn = DeformableCrossAttention(d_model, nhead, n_points)
        else:
            self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, tgt, query_pos, memory, pos, memory_padding_mask, memory_shape, self_attn_mask=None):
        """tgt, query_pos [B, Q, C]; memory, pos [B, S, C]; memory_shape (H, W) with S = H*W;
        self_attn_mask [B * nhead, Q, Q] or [Q, Q], True = blocked -> [B, Q, C].

        Only the self-attention takes the mask: it is the one place where queries see each other.
        In cross-attention each query attends to the image memory on its own (its output row
        depends on no other query), so nothing can leak between queries there.
        """
        q = k = tgt + query_pos
        attended = self.self_attn(q, k, tgt, attn_mask=self_attn_mask)[0]
        tgt = self.norm1(tgt + self.dropout1(attended))
        if isinstance(self.cross_attn, DeformableCrossAttention):
            attended = self.cross_attn(tgt, query_pos, memory, memory_shape, memory_padding_mask)
        else:
            attended = self.cross_attn(tgt + query_pos, memory + pos, memory,
                                       key_padding_mask=memory_padding_mask)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        return self.ffn(tgt)


class Transformer(nn.Module):
    """Encoder-decoder of DETR.

    forward(src [B, S, C], pos [B, S, C], padding_mask [B, S], memory_shape (H, W) with S = H*W,
    tgt [B, Q, C], query_pos [B, Q, C], self_attn_mask) -> (hs [num_decoder_layers, B, Q, C], memory [B, S, C]).
    deformable_cross_layers: indices of the decoder layers whose cross-attention is deformable
    (`n_points` sampling points per head).
    """

    def __init__(self, d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, deformable_cross_layers=(), n_points=4):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        if any(not 0 <= i < num_decoder_layers for i in deformable_cross_layers):
            raise ValueError(f"deformable_cross_layers must be decoder layer indices in [0, {num_decoder_layers}), "
                             f"got {list(deformable_cross_layers)}")
        self.d_model, self.nhead = d_model, nhead
        self.encoder = _clones(EncoderLayer(d_model, nhead, dim_feedforward, dropout), num_encoder_layers)
        dense = DecoderLayer(d_model, nhead, dim_feedforward, dropout)
        deformable = (DecoderLayer(d_model, nhead, dim_feedforward, dropout, True, n_points)
                      if deformable_cross_layers else None)
        self.decoder = nn.ModuleList(copy.deepcopy(deformable if i in deformable_cross_layers else dense)
                                     for i in range(num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if isinstance(module, DeformableCrossAttention):
                module.reset_parameters()

    def forward(self, src, pos, padding_mask, memory_shape, tgt, query_pos, self_attn_mask=None):
        memory = src
        for layer in self.encoder:
            memory = layer(memory, pos, padding_mask)
        hs, out = [], tgt
        for layer in self.decoder:
            out = layer(out, query_pos, memory, pos, padding_mask, memory_shape, self_attn_mask)
            hs.append(self.decoder_norm(out))
        return torch.stack(hs), memory


def build_transformer(args):
    return Transformer(args.d_model, args.nheads, args.enc_layers, args.dec_layers, args.dim_feedforward,
                       args.dropout, args.deformable_cross_layers, args.n_points)
