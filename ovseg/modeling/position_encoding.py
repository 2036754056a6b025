"""Sine positional encoding of a feature map (DETR / Mask2Former style, normalised)."""

from __future__ import annotations

import math

import torch


def sine_position_encoding(
    feature: torch.Tensor, num_pos_feats: int, *, temperature: float = 10000.0
) -> torch.Tensor:
    """Positional encoding computed from the map's shape only (no padding mask).

    Args:
        feature: (B, C, H, W) any map; only its shape, device and batch size are used.
        num_pos_feats: half the output channels.
    Returns:
        (B, 2*num_pos_feats, H, W): channels [0, n) encode y, [n, 2n) encode x; even channels
        sine, odd channels cosine.
    """
    batch, _, height, width = feature.shape
    device = feature.device
    scale = 2 * math.pi
    eps = 1e-6
    y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y_embed = y_embed / (y_embed[-1:] + eps) * scale
    x_embed = x_embed / (x_embed[-1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)

    def encode(positions):  # (L,) -> (L, n): sines and cosines of one axis
        angles = positions[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    # Each axis once (H + W rows), then broadcast: the same values as the (H, W, n) angles.
    pos_y = encode(y_embed)[:, None, :].expand(height, width, -1)
    pos_x = encode(x_embed)[None, :, :].expand(height, width, -1)
    pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
    return pos.unsqueeze(0).expand(batch, -1, -1, -1)
