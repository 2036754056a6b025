"""Open-vocabulary labels for any masks (SAM's, the prompt head's, a user's), and results in
ovseg's formats built from labelled masks.

A mask is labelled exactly as FC-CLIP's out-of-vocabulary branch labels a query mask: mask
pooling of the frozen CLIP's dense map (stride 32), the CLIP image head, cosine with the cached
text classifier at CLIP's temperature, max over synonyms, softmax over the vocabulary's classes
(``FCCLIP.out_vocab_logits``). A mask too small to cover any cell of the stride-32 map once
binarised (the FC-CLIP rule pools nothing there) is pooled with soft weights instead: each
cell weighted by the fraction of its area the mask covers (see :func:`pool_mask_logits`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg.modeling import postprocess
from ovseg.modeling.transformer_decoder import mask_pooling

HARD_LOGIT = 1e4  # a bool mask as logits: sigmoid gives exactly 1 / 0 in float32


def pool_mask_logits(
    clip_dense: torch.Tensor, mask_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask pooling of the dense CLIP map, with a soft fallback for tiny masks.

    Args:
        clip_dense: (1, C, h, w) the frozen CLIP's dense map (stride 32 of the padded input).
        mask_logits: (N, H, W) logits over the same padded frame (any resolution; > 0 is in).
    Returns:
        pooled (N, C) features and soft (N,) bool. Where the mask binarised at the map's size
        (FC-CLIP's rule, :func:`ovseg.modeling.transformer_decoder.mask_pooling`) is empty
        but the mask is not, ``soft`` is True and the features are averaged with each cell's
        covered fraction as its weight (area resampling of the binary mask). A mask empty at
        every size pools to zeros.
    """
    pooled = mask_pooling(clip_dense, mask_logits[None])[0]
    resized = F.interpolate(
        mask_logits[None], size=clip_dense.shape[-2:], mode="bilinear", align_corners=False
    )[0]
    empty = ~(resized > 0).flatten(1).any(1)
    soft = empty & (mask_logits > 0).flatten(1).any(1)
    if soft.any():
        weights = F.interpolate(
            (mask_logits[soft] > 0).float()[None], size=clip_dense.shape[-2:], mode="area"
        )[0]
        weights = weights / weights.sum(dim=(-1, -2), keepdim=True).clamp(min=1e-12)
        pooled[soft] = torch.einsum("chw,nhw->nc", clip_dense[0].float(), weights).to(pooled.dtype)
    return pooled, soft


def class_probabilities(
    model, clip_embeds: torch.Tensor, classifier, clip_vis_dense: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, D) mask-pooled CLIP embeddings -> (N, K) class probabilities of the
    out-of-vocabulary classifier (softmax over the K classes, void left out as in
    FC-CLIP's ensemble). ``clip_vis_dense`` (1, C, h, w), the image's dense CLIP map: a
    model with MAFT+'s CDT adapts the classifier to the image (``FCCLIP.adapted_text``)."""
    if clip_vis_dense is not None:
        classifier = model.adapted_text(classifier, clip_vis_dense)[1]
    logits = model.out_vocab_logits(clip_embeds[None], classifier)[0]
    return logits[:, :-1].float().softmax(-1)


def top_classes(probs: torch.Tensor, names: list[str], k: int = 5) -> list[list[dict]]:
    """(N, K) probabilities -> per mask the ``k`` best [{"class", "class_id", "score"}]."""
    k = min(k, probs.shape[-1])
    scores, index = probs.topk(k, dim=-1)
    return [
        [
            {"class": names[c], "class_id": int(c), "score": float(s)}
            for s, c in zip(row_scores.tolist(), row_index.tolist(), strict=True)
        ]
        for row_scores, row_index in zip(scores, index, strict=True)
    ]


def results_from_masks(
    masks: torch.Tensor,
    probs: torch.Tensor,
    mask_scores: torch.Tensor,
    is_thing: torch.Tensor,
    *,
    tasks: tuple[str, ...],
    overlap_threshold: float = 0.8,
    things_only: bool = True,
) -> dict:
    """The predictor's per-task outputs from labelled binary masks.

    Args:
        masks: (N, H, W) bool at the output size.
        probs: (N, K) class probabilities; mask_scores: (N,) mask quality in [0, 1] (SAM's
            predicted IoU; 1 when unknown).
        is_thing: (K,) bool.
        things_only: instances keep masks whose best class is a thing (the instance task's
            definition); False keeps every mask (prompted masks).
    Returns:
        the keys of ``OVSegPredictor.segment`` for ``tasks``: ``sem_seg`` (K, H, W), the sum
        over masks of class probability x mask (0 where no mask covers a pixel; such pixels
        are void in the label map); ``panoptic_seg`` + ``segments_info``, non-overlapping,
        each pixel owned by the covering mask with the highest class probability, a segment
        dropped when less than ``overlap_threshold`` of it stays visible, stuff of one class
        merged (Mask2Former's rules, :func:`postprocess.panoptic_inference`); ``instances``
        one per mask with its best class, score = class probability x mask score, sorted.
    """
    masks = masks.bool()
    # Probabilities as logits with an impossible void: the post-processing softmax gives
    # the probabilities back.
    void = probs.new_full((probs.shape[0], 1), float("-inf"))
    class_logits = torch.cat([probs.clamp(min=1e-12).log(), void], dim=1)
    mask_logits = (masks.float() * 2 - 1) * HARD_LOGIT
    result = {}
    if "semantic" in tasks:
        result["sem_seg"] = postprocess.semantic_inference(class_logits, mask_logits)
    if "panoptic" in tasks:
        order = probs.max(-1).values.argsort(descending=True, stable=True)  # segments by score
        result["panoptic_seg"], result["segments_info"] = postprocess.panoptic_inference(
            class_logits[order], mask_logits[order], is_thing, overlap_threshold=overlap_threshold
        )
    if "instance" in tasks:
        scores, labels = probs.max(-1)
        keep = is_thing.to(labels.device)[labels] if things_only else torch.ones_like(labels).bool()
        scores = scores[keep] * mask_scores.to(scores)[keep].clamp(0, 1)
        order = scores.argsort(descending=True)
        kept = masks[keep][order]
        result["instances"] = {
            "masks": kept,
            "boxes": postprocess.masks_to_boxes(kept),
            "scores": scores[order],
            "labels": labels[keep][order],
        }
    return result
