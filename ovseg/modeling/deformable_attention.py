"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch: exact, no compiled op."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def multi_scale_deformable_sampling(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinearly sample each level at the given points and sum with attention weights.

    Args:
        value: (B, N_in, heads, head_dim), the levels' tokens concatenated row-major.
        spatial_shapes: (H_l, W_l) of each level.
        sampling_locations: (B, N_q, heads, levels, points, 2) normalised (x, y) in [0, 1].
        attention_weights: (B, N_q, heads, levels, points), softmax-ed over levels x points.
    Returns:
        (B, N_q, heads * head_dim), channel index = head * head_dim + d.
    """
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    value_levels = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample coordinates
    sampled = []
    for level, (height, width) in enumerate(spatial_shapes):
        value_map = value_levels[level].flatten(2).transpose(1, 2)
        value_map = value_map.reshape(batch * heads, head_dim, height, width)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B*heads, N_q, points, 2)
        sampled.append(
            F.grid_sample(
                value_map, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )  # (B*heads, head_dim, N_q, points)
    weights = attention_weights.transpose(1, 2).reshape(
        batch * heads, 1, num_queries, levels, points
    )
    # Accumulate level by level: the same sum as stacking all samples, without the big copy.
    output = (sampled[0] * weights[..., 0, :]).sum(-1)
    for level in range(1, levels):
        output = output + (sampled[level] * weights[..., level, :]).sum(-1)
    return output.view(batch, heads * head_dim, num_queries).transpose(1, 2).contiguous()


class MultiScaleDeformableAttention(nn.Module):
    """Each query attends to ``num_points`` sampled points per head and level around its
    reference point; offsets and weights are predicted from the query."""

    def __init__(
        self, d_model: int = 256, num_levels: int = 3, num_heads: int = 8, num_points: int = 4
    ) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.d_model = d_model
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(d_model, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(d_model, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value_input: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """query (B, N_q, C), reference_points (B, N_q, levels, 2) normalised (x, y),
        value_input (B, N_in, C) -> (B, N_q, C)."""
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value_input).view(batch, -1, heads, self.d_model // heads)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = F.softmax(weights, -1).view(batch, num_queries, heads, levels, points)
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
        )
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
        output = multi_scale_deformable_sampling(value, spatial_shapes, locations, weights)
        return self.output_proj(output)
