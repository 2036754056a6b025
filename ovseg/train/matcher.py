"""Hungarian matching of predicted masks to ground-truth segments (Mask2Former)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ovseg.train.point_sampling import labelled_at, point_sample


def batch_sigmoid_ce_cost(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean sigmoid BCE of every prediction against every target: (Q, P), (N, P) -> (Q, N).
    ``weights`` (P,): per-point weights (0 leaves a point out), the mean becomes weighted."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    points = float(logits.shape[1])
    if weights is not None:
        pos, neg, points = pos * weights, neg * weights, weights.sum().clamp(min=1.0)
    cost = torch.einsum("qp,np->qn", pos, targets) + torch.einsum("qp,np->qn", neg, 1 - targets)
    return cost / points


def batch_dice_cost(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - dice of every prediction against every target: (Q, P), (N, P) -> (Q, N);
    ``weights`` (P,) as in :func:`batch_sigmoid_ce_cost`."""
    probs = logits.sigmoid()
    if weights is not None:
        probs, targets = probs * weights, targets * weights
    numerator = 2 * torch.einsum("qp,np->qn", probs, targets)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def hungarian_match(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
    *,
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    num_points: int = 12544,
    generators: list[torch.Generator] | None = None,
    ignore_void: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One-to-one assignment per image minimising class + BCE + dice cost on random points.

    Args:
        pred_logits: (B, Q, K+1); pred_masks: (B, Q, h, w) logits.
        targets: per image ``labels`` (N,) and ``masks`` (N, H, W) float 0/1.
        generators: one per image for the shared random points (reproducible training).
        ignore_void: leave pixels under no target mask (void, unlabeled) out of the mask
            costs, as :class:`ovseg.train.losses.SetCriterion` does with it.
    Returns:
        per image (prediction indices, target indices), int64, sorted by prediction.
    """
    matches = []
    for b, target in enumerate(targets):
        labels, masks = target["labels"], target["masks"]
        if labels.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64)
            matches.append((empty, empty))
            continue
        probs = pred_logits[b].float().softmax(-1)
        class_cost = -probs[:, labels]
        generator = generators[b] if generators is not None else None
        points = torch.rand(1, num_points, 2, generator=generator).to(pred_masks.device)
        pred = point_sample(
            pred_masks[b][:, None].float(), points.repeat(pred_masks.shape[1], 1, 1)
        )[:, 0]
        gt = point_sample(masks[:, None].float(), points.repeat(masks.shape[0], 1, 1))[:, 0]
        weights = labelled_at(masks, points)[0] if ignore_void else None
        cost = (
            mask_weight * batch_sigmoid_ce_cost(pred, gt, weights)
            + class_weight * class_cost
            + dice_weight * batch_dice_cost(pred, gt, weights)
        )
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        matches.append(
            (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
        )
    return matches
