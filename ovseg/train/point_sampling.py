"""Point sampling of mask logits (PointRend), used by the matcher and the mask losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample maps at normalised points.

    Args:
        masks: (N, C, H, W).
        points: (N, P, 2) normalised (x, y) in [0, 1].
    Returns:
        (N, C, P).
    """
    grid = 2.0 * points.unsqueeze(2) - 1.0
    return F.grid_sample(masks, grid, mode="bilinear", align_corners=False).squeeze(3)


def labelled_at(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """How much each point lies on a labelled pixel (under any of the target ``masks``
    (N, H, W)), sampled as the targets are: (M, P, 2) points -> (M, P). Void pixels give 0."""
    union = masks.amax(0)[None, None].float()
    return point_sample(union.expand(len(points), -1, -1, -1), points)[:, 0]


def uncertain_points(
    mask_logits: torch.Tensor,
    num_points: int,
    *,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PointRend training points: of ``oversample_ratio * num_points`` uniform points keep the
    ``importance_ratio`` fraction where |logit| is smallest, then add fresh uniform points.

    Args:
        mask_logits: (N, 1, H, W).
    Returns:
        (N, num_points, 2) normalised (x, y).
    """
    count = mask_logits.shape[0]
    device = mask_logits.device
    sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(count, sampled, 2, generator=generator).to(device)
    uncertainty = -point_sample(mask_logits, candidates).abs()  # (N, 1, sampled)
    num_uncertain = int(importance_ratio * num_points)
    num_random = num_points - num_uncertain
    index = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1)[1]
    chosen = torch.gather(candidates, 1, index.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        fresh = torch.rand(count, num_random, 2, generator=generator).to(device)
        chosen = torch.cat([chosen, fresh], dim=1)
    return chosen
