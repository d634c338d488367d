"""Sinusoidal encodings: of feature-map positions (DETR's encoder) and of boxes (DN queries)."""
import math

import torch
from torch import nn


def sine_encoding(coords, num_feats=64, temperature=10000, scale=2 * math.pi):
    """Transformer-style sin/cos encoding of each coordinate in [0, 1].

    coords [..., K] -> [..., K * num_feats]; per coordinate, num_feats/2 frequencies, sin and cos
    interleaved (DETR's layout).
    """
    if num_feats % 2:
        raise ValueError(f"num_feats must be even, got {num_feats}")
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)  # [F]
    pos = coords[..., None].float() * scale / dim_t  # [..., K, F]
    pos = torch.stack([pos[..., 0::2].sin(), pos[..., 1::2].cos()], dim=-1).flatten(-2)  # [..., K, F]
    return pos.flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """DETR's 2-d sine encoding of (y, x) positions, normalised by the unpadded extent.

    mask [B, H, W] (True = padding) -> pos [B, 2 * num_pos_feats, H, W].
    """

    def __init__(self, num_pos_feats=128, temperature=10000):
        super().__init__()
        self.num_pos_feats, self.temperature = num_pos_feats, temperature

    def forward(self, mask):
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)  # [B, H, W], 1..H inside the image
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps)  # pixel centres in (0, 1)
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps)
        coords = torch.stack([y_embed, x_embed], dim=-1)  # [B, H, W, 2]
        pos = sine_encoding(coords, self.num_pos_feats, self.temperature)  # [B, H, W, 2F]
        return pos.permute(0, 3, 1, 2)
