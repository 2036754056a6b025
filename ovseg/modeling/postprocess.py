"""Mask2Former post-processing: semantic scores, panoptic map + segments, instances + boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_to_original(
    maps: torch.Tensor, resized_hw: tuple[int, int], original_hw: tuple[int, int]
) -> torch.Tensor:
    """Crop padded-resolution maps (..., Hp, Wp) to the resized image and bilinearly resize
    them to the original size (detectron2 ``sem_seg_postprocess``)."""
    maps = maps[..., : resized_hw[0], : resized_hw[1]]
    squeeze = maps.dim() == 3
    if squeeze:
        maps = maps[None]
    maps = F.interpolate(maps, size=tuple(original_hw), mode="bilinear", align_corners=False)
    return maps[0] if squeeze else maps


def semantic_inference(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, *, block: int = 8192
) -> torch.Tensor:
    """(Q, K+1), (Q, H, W) -> per-class scores (K, H, W): sum over queries of class
    probability x mask probability (Mask2Former ``semantic_inference``).

    Done ``block`` pixels at a time: each block's mask probabilities are made in cache and
    multiplied at once, instead of a (Q, H, W) probability map in memory (the same sums).
    """
    probs = F.softmax(class_logits, dim=-1)[..., :-1].T.contiguous()  # (K, Q)
    flat = mask_logits.reshape(mask_logits.shape[0], -1)
    scores = flat.new_empty((probs.shape[0], flat.shape[1]))
    for start in range(0, flat.shape[1], block):
        torch.mm(
            probs, flat[:, start : start + block].sigmoid(), out=scores[:, start : start + block]
        )
    return scores.view(probs.shape[0], *mask_logits.shape[-2:])


def panoptic_queries(
    class_logits: torch.Tensor,
    object_mask_threshold: float = 0.0,
    *,
    novel_classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """(Q, K+1) -> (Q,) bool: the queries panoptic inference can use (not "no object", score
    above the threshold). Only their masks need resizing to the output size.

    ``novel_classes`` (K,) bool (the keep-novel rule; None: the official rule): a query whose
    most likely class other than no-object is one of these is kept too, whatever its no-object
    probability. That probability comes from the in-vocabulary head, which was trained to call
    exactly those classes "no object" (they were unlabelled), so it says nothing about them."""
    probs = F.softmax(class_logits, dim=-1)
    scores, labels = probs.max(-1)
    keep = labels.ne(class_logits.shape[-1] - 1) & (scores > object_mask_threshold)
    if novel_classes is not None:
        object_scores, object_labels = probs[..., :-1].max(-1)
        novel = novel_classes.to(device=labels.device, dtype=torch.bool)[object_labels]
        keep |= novel & (object_scores > object_mask_threshold)
    return keep


def panoptic_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    is_thing: torch.Tensor,
    *,
    object_mask_threshold: float = 0.0,
    overlap_threshold: float = 0.8,
    novel_classes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[dict]]:
    """(Q, K+1), (Q, H, W), is_thing (K,) bool -> int32 map (H, W) (0 = no segment) and
    segments [{"id", "isthing", "category_id", "score"}]. Stuff of one class is one segment.
    Passing only the :func:`panoptic_queries` rows of both gives the same result.
    ``novel_classes``: the keep-novel rule of :func:`panoptic_queries`; a query it keeps
    although no-object is its most likely class has its best other class and that class's
    probability (small: its no-object probability stays in the score that ranks the queries
    for each pixel, so it takes only pixels no confident query claims)."""
    probs = F.softmax(class_logits, dim=-1)
    if novel_classes is None:
        scores, labels = probs.max(-1)
    else:  # the same as above for every query the official rule keeps
        scores, labels = probs[..., :-1].max(-1)
    keep = panoptic_queries(class_logits, object_mask_threshold, novel_classes=novel_classes)
    cur_scores, cur_classes = scores[keep], labels[keep]
    cur_masks = mask_logits[keep].sigmoid()
    height, width = mask_logits.shape[-2:]
    panoptic = torch.zeros((height, width), dtype=torch.int32, device=mask_logits.device)
    segments: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic, segments
    owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    stuff_segment_ids: dict[int, int] = {}
    segment_id = 0
    for k in range(cur_classes.shape[0]):
        category = int(cur_classes[k])
        thing = bool(is_thing[category])
        owned = owner == k
        confident = cur_masks[k] >= 0.5
        mask_area = int(owned.sum())
        original_area = int(confident.sum())
        segment = owned & confident
        if mask_area == 0 or original_area == 0 or int(segment.sum()) == 0:
            continue
        if mask_area / original_area < overlap_threshold:
            continue
        if not thing and category in stuff_segment_ids:
            panoptic[segment] = stuff_segment_ids[category]
            continue
        segment_id += 1
        if not thing:
            stuff_segment_ids[category] = segment_id
        panoptic[segment] = segment_id
        segments.append(
            {
                "id": segment_id,
                "isthing": thing,
                "category_id": category,
                "score": float(cur_scores[k]),
            }
        )
    return panoptic, segments


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) float boxes x0, y0, x1, y1 (exclusive end); empty -> zeros."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    if masks.shape[0] == 0:
        return boxes
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    nonempty = rows.any(dim=1)
    height, width = masks.shape[-2:]
    row_index = torch.arange(height, device=masks.device)
    col_index = torch.arange(width, device=masks.device)
    y0 = torch.where(rows, row_index, height).amin(1)
    y1 = torch.where(rows, row_index, -1).amax(1) + 1
    x0 = torch.where(cols, col_index, width).amin(1)
    x1 = torch.where(cols, col_index, -1).amax(1) + 1
    found = torch.stack([x0, y0, x1, y1], 1).float()
    boxes[nonempty] = found[nonempty]
    return boxes


def instance_queries(
    class_logits: torch.Tensor,
    is_thing: torch.Tensor,
    *,
    detections_per_image: int = 100,
    things_only: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k (query, class) pairs by class probability (Mask2Former instance inference).

    (Q, K+1), is_thing (K,) -> class scores (N,), labels (N,), query index (N,) of each pair,
    N <= detections_per_image (things only when ``things_only``); a query may appear twice.
    """
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    probs = F.softmax(class_logits, dim=-1)[:, :-1]
    labels = torch.arange(num_classes, device=probs.device).repeat(num_queries)
    k = min(detections_per_image, probs.numel())
    scores, index = probs.flatten().topk(k, sorted=False)
    labels = labels[index]
    query = index // num_classes
    if things_only:
        keep = is_thing.to(labels.device)[labels]
        scores, labels, query = scores[keep], labels[keep], query[keep]
    return scores, labels, query


def instance_results(
    scores: torch.Tensor, labels: torch.Tensor, mask_logits: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Score each pair of :func:`instance_queries` by class prob x mean mask prob inside its
    binarised mask. mask_logits (N, H, W): the pairs' own queries' logits.

    Returns masks (N, H, W) bool, boxes (N, 4) from the masks, scores (N,), labels (N,),
    sorted by score (the official code leaves the top-k unsorted; the set is the same).
    """
    masks = mask_logits > 0
    flat = masks.flatten(1).float()
    mask_scores = (mask_logits.sigmoid().flatten(1) * flat).sum(1) / (flat.sum(1) + 1e-6)
    scores = scores * mask_scores
    order = scores.argsort(descending=True)
    masks = masks[order]
    return {
        "masks": masks,
        "boxes": masks_to_boxes(masks),
        "scores": scores[order],
        "labels": labels[order],
    }


def instance_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    is_thing: torch.Tensor,
    *,
    detections_per_image: int = 100,
    things_only: bool = True,
) -> dict[str, torch.Tensor]:
    """:func:`instance_queries` then :func:`instance_results`: (Q, K+1), (Q, H, W), is_thing
    (K,) -> masks (N, H, W) bool, boxes (N, 4), scores (N,), labels (N,) sorted by score."""
    scores, labels, query = instance_queries(
        class_logits, is_thing, detections_per_image=detections_per_image, things_only=things_only
    )
    return instance_results(scores, labels, mask_logits[query])
