"""Mask2Former set losses: class cross-entropy with a down-weighted no-object class, and
sigmoid BCE + dice on uncertainty-sampled points, on the final and every auxiliary output."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ovseg.modeling.pixel_text import pixel_text_loss
from ovseg.train.matcher import hungarian_match
from ovseg.train.point_sampling import labelled_at, point_sample, uncertain_points


@dataclass
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_ratio: float = 0.75
    # Leave void pixels (under no target mask: unlabeled) out of the mask losses and matching
    # costs, so that unlabeled regions - e.g. novel classes - are not taught to be no mask.
    # Off in the official recipe, where a matched mask's target is 0 on void pixels.
    ignore_void: bool = False
    # Void-aware no-object loss (issue 34): an unmatched query whose predicted mask lies mostly
    # (over ``void_fraction`` of its area) on void pixels - labelled by no target, padding
    # excluded - gets no no-object loss: it may have found an object nobody named (a novel
    # class), and the official rule teaches it "nothing here". Off in the official recipe.
    void_aware_no_object: bool = False
    void_fraction: float = 0.5
    # Text context (ovseg.modeling.text_context): CDT's CE on the out-of-vocabulary logits of
    # the matched queries, and DenseCLIP's pixel-text auxiliary loss; used when the model
    # returns those outputs.
    cdt_weight: float = 2.0
    pixel_text_weight: float = 0.0


def sigmoid_ce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_masks: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(M, P) logits and 0/1 labels -> sum over masks of the mean BCE over points / num_masks.
    ``weights`` (M, P): per-point weights (0 leaves a point out), the mean becomes weighted."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if weights is None:
        return loss.mean(1).sum() / num_masks
    return ((loss * weights).sum(1) / weights.sum(1).clamp(min=1.0)).sum() / num_masks


def dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_masks: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(M, P) -> sum over masks of 1 - (2 p.t + 1) / (sum p + sum t + 1), / num_masks;
    ``weights`` (M, P) as in :func:`sigmoid_ce_loss`."""
    probs = logits.sigmoid()
    if weights is not None:
        probs, labels = probs * weights, labels * weights
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


class SetCriterion:
    """Losses of one set of predictions against targets, named like Mask2Former's:
    ``loss_ce``, ``loss_mask``, ``loss_dice`` and ``..._{i}`` for auxiliary output i.

    ``num_masks`` and ``class_weight_total`` are the global (all processes) number of target
    masks and sum of class weights, so that data-parallel training equals one process with the
    same global batch.
    """

    def __init__(self, num_classes: int, cfg: LossConfig | None = None) -> None:
        self.num_classes = num_classes
        self.cfg = cfg or LossConfig()
        self.empty_weight = torch.ones(num_classes + 1)
        self.empty_weight[-1] = self.cfg.no_object_weight

    def class_targets(self, pred_logits, targets, matches) -> torch.Tensor:
        target_classes = torch.full(
            pred_logits.shape[:2], self.num_classes, dtype=torch.int64, device=pred_logits.device
        )
        for b, (pred_index, target_index) in enumerate(matches):
            target_classes[b, pred_index] = targets[b]["labels"][target_index]
        return target_classes

    def loss_labels(
        self, pred_logits, target_classes, class_weight_total, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weighted CE over the K+1 classes, summed and divided by ``class_weight_total``;
        ``skip`` (B, Q) bool: queries left out (see :meth:`void_queries`)."""
        weight = self.empty_weight.to(pred_logits.device)
        if skip is not None:
            target_classes = target_classes.masked_fill(skip, -100)  # F.cross_entropy's ignore
        losses = F.cross_entropy(
            pred_logits.float().transpose(1, 2), target_classes, weight=weight, reduction="none"
        )
        return losses.sum() / class_weight_total

    def void_queries(self, pred_masks, targets, matches) -> torch.Tensor:
        """(B, Q) bool: the unmatched queries whose predicted mask (logit > 0, at the mask
        resolution h x w) lies more than ``cfg.void_fraction`` of its area on void pixels:
        under no target mask and inside the image (``valid``, when the target has it: padding
        is not void). Queries with empty masks are never void."""
        batch, queries, height, width = pred_masks.shape
        void = torch.zeros(batch, queries, dtype=torch.bool, device=pred_masks.device)
        for b, (pred_index, _) in enumerate(matches):
            target = targets[b]
            masks = target["masks"].float()
            if len(masks):
                unlabelled = 1.0 - masks.amax(0)
            else:
                unlabelled = torch.ones(masks.shape[-2:], device=masks.device)
            if "valid" in target:
                unlabelled = unlabelled * target["valid"].float()
            unlabelled = F.interpolate(
                unlabelled[None, None], size=(height, width), mode="bilinear", align_corners=False
            )[0, 0]
            with torch.no_grad():
                shown = (pred_masks[b] > 0).float()
                area = shown.sum((1, 2))
                on_void = (shown * unlabelled).sum((1, 2))
            void[b] = (area > 0) & (on_void > self.cfg.void_fraction * area)
            void[b, pred_index] = False
        return void

    def loss_masks(self, pred_masks, targets, matches, num_masks, generators):
        """BCE and dice of matched masks on uncertainty-sampled points (per image, so that each
        image's random points come from its own generator)."""
        cfg = self.cfg
        point_logits, point_labels, point_weights = [], [], []
        for b, (pred_index, target_index) in enumerate(matches):
            if pred_index.numel() == 0:
                continue
            src = pred_masks[b][pred_index][:, None].float()
            gt = targets[b]["masks"][target_index][:, None].float()
            with torch.no_grad():
                points = uncertain_points(
                    src,
                    cfg.num_points,
                    oversample_ratio=cfg.oversample_ratio,
                    importance_ratio=cfg.importance_ratio,
                    generator=generators[b] if generators else None,
                )
                point_labels.append(point_sample(gt, points)[:, 0])
                if cfg.ignore_void:
                    point_weights.append(labelled_at(targets[b]["masks"], points))
            point_logits.append(point_sample(src, points)[:, 0])
        if not point_logits:
            zero = pred_masks.sum() * 0.0
            return zero, zero
        logits, labels = torch.cat(point_logits), torch.cat(point_labels)
        weights = torch.cat(point_weights) if point_weights else None
        return (
            sigmoid_ce_loss(logits, labels, num_masks, weights),
            dice_loss(logits, labels, num_masks, weights),
        )

    def __call__(
        self,
        outputs: dict,
        targets: list[dict],
        *,
        num_masks: float,
        class_weight_total: float | None = None,
        generators: list[torch.Generator] | None = None,
    ) -> dict[str, torch.Tensor]:
        """outputs: ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, h, w) and optional
        ``aux_outputs`` (list of the same); targets: per image ``labels`` (N,), ``masks``
        (N, H, W) in [0, 1] and optionally ``valid`` (H, W) bool (False on padding). Returns
        the unweighted named losses; :meth:`total` weights them."""
        losses = {}
        stages = [("", outputs)] + [
            (f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))
        ]
        for suffix, stage in stages:
            matches = hungarian_match(
                stage["pred_logits"],
                stage["pred_masks"],
                targets,
                class_weight=self.cfg.class_weight,
                mask_weight=self.cfg.mask_weight,
                dice_weight=self.cfg.dice_weight,
                num_points=self.cfg.num_points,
                generators=generators,
                ignore_void=self.cfg.ignore_void,
            )
            target_classes = self.class_targets(stage["pred_logits"], targets, matches)
            total_weight = class_weight_total
            if total_weight is None:
                total_weight = self.empty_weight.to(target_classes.device)[target_classes].sum()
            skip = None
            if self.cfg.void_aware_no_object:
                skip = self.void_queries(stage["pred_masks"], targets, matches)
            losses[f"loss_ce{suffix}"] = self.loss_labels(
                stage["pred_logits"], target_classes, total_weight, skip
            )
            mask_loss, dice = self.loss_masks(
                stage["pred_masks"], targets, matches, num_masks, generators
            )
            losses[f"loss_mask{suffix}"] = mask_loss
            losses[f"loss_dice{suffix}"] = dice
            if not suffix and "out_vocab_logits" in outputs:
                losses["loss_cdt"] = self.loss_matched_labels(
                    outputs["out_vocab_logits"], targets, matches, num_masks
                )
        if "pixel_text_logits" in outputs:
            semantic = semantic_targets(targets, outputs["pixel_text_logits"].shape[0])
            losses["loss_pixeltext"] = pixel_text_loss(outputs["pixel_text_logits"], semantic)
        return losses

    def loss_matched_labels(self, logits, targets, matches, num_masks) -> torch.Tensor:
        """CE over the K classes (no void) of the matched queries' logits (B, Q, K+1), summed
        and divided by the global number of target masks (MAFT+'s CDT is trained by the
        classification of the masks it sees)."""
        picked, labels = [], []
        for b, (pred_index, target_index) in enumerate(matches):
            picked.append(logits[b, pred_index, :-1])
            labels.append(targets[b]["labels"][target_index])
        picked, labels = torch.cat(picked), torch.cat(labels)
        if not len(labels):
            return logits.sum() * 0.0
        return F.cross_entropy(picked.float(), labels, reduction="sum") / num_masks

    def class_weight_sum(self, num_queries: int, batch: int, num_targets: int) -> float:
        """Sum of cross-entropy weights over a batch: matched queries weigh 1, the rest
        no_object_weight (each target is matched to one query)."""
        unmatched = num_queries * batch - num_targets
        return num_targets + unmatched * self.cfg.no_object_weight

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = {
            "ce": self.cfg.class_weight,
            "mask": self.cfg.mask_weight,
            "dice": self.cfg.dice_weight,
            "cdt": self.cfg.cdt_weight,
            "pixeltext": self.cfg.pixel_text_weight,
        }
        return sum(weights[name.split("_")[1]] * value for name, value in losses.items())


def semantic_targets(targets: list[dict], batch: int, *, void: int = 255) -> torch.Tensor:
    """Per image, the class of each pixel from its target masks ((N, H, W), labels (N,)),
    ``void`` where no mask covers it: (B, H, W) int64 (the images share the padded size)."""
    height, width = targets[0]["masks"].shape[-2:]
    device = targets[0]["masks"].device
    semantic = torch.full((batch, height, width), void, dtype=torch.int64, device=device)
    for b, target in enumerate(targets):
        for mask, label in zip(target["masks"], target["labels"], strict=True):
            semantic[b][mask > 0.5] = label
    return semantic
