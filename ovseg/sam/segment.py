"""Masks from SAM or the prompt head, labelled with any vocabulary: the work behind
``OVSegPredictor.segment_masks`` and ``OVSegPredictor.segment_prompts``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.modeling import postprocess
from ovseg.sam.labels import class_probabilities, results_from_masks, top_classes
from ovseg.sam.masks import MaskSet
from ovseg.sam.prompts import Prompts, make_prompts

TOP_CLASSES = 5  # classes listed per prompted mask


def masks_at_output(predictor, masks, image_size, out_hw) -> torch.Tensor:
    """(N, H, W) bool at the image size -> (N, h, w) bool tensor at the output size."""
    masks = torch.as_tensor(np.asarray(masks), device=predictor.device).bool()
    if masks.dim() != 3 or tuple(masks.shape[-2:]) != tuple(image_size):
        raise ValueError(
            f"masks must be (N, H, W) at the image size {tuple(image_size)}, got "
            f"{tuple(masks.shape)}"
        )
    if tuple(out_hw) == tuple(image_size):
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *out_hw))
    return F.interpolate(masks[None].float(), size=tuple(out_hw), mode="nearest")[0].bool()


@torch.no_grad()
def segment_masks(
    predictor,
    image,
    masks,
    *,
    mask_scores=None,
    tasks: tuple[str, ...] = ("panoptic", "semantic", "instance"),
    things_only: bool = True,
    short_side: int | None = None,
) -> dict:
    """Label given masks with the predictor's vocabulary and build the per-task outputs.

    ``masks`` (N, H, W) bool at the image size; ``mask_scores`` (N,) in [0, 1] (default 1);
    ``short_side``: the frozen CLIP's test resize (default: the config's).
    Returns ``OVSegPredictor.segment``'s keys for ``tasks`` (see
    :func:`ovseg.sam.labels.results_from_masks`) plus ``mask_probs`` (N, K) and
    ``mask_top_classes`` (per mask its best classes)."""
    features = predictor.encode(image, short_side=short_side)
    masks_np = np.asarray(masks).astype(bool)
    probs = class_probabilities(
        predictor.model,
        predictor.pool_masks(features, masks_np),
        predictor.classifier,
        features.clip_dense,
    )
    scores = torch.ones(len(masks_np)) if mask_scores is None else torch.as_tensor(mask_scores)
    out_hw = predictor.output_size(*features.image_size)
    result = {
        "image_size": tuple(features.image_size),
        "output_size": out_hw,
        "vocabulary": predictor.vocabulary,
        "mask_probs": probs,
        "mask_top_classes": top_classes(probs, predictor.vocabulary.names, TOP_CLASSES),
    }
    is_thing = torch.tensor(predictor.vocabulary.is_thing, device=predictor.device)
    result |= results_from_masks(
        masks_at_output(predictor, masks_np, features.image_size, out_hw),
        probs,
        scores.float().to(predictor.device),
        is_thing,
        tasks=tasks,
        overlap_threshold=predictor.cfg.inference.overlap_threshold,
        things_only=things_only,
    )
    return result


@torch.no_grad()
def segment_automatic(predictor, image, sam_masks, *, tasks, short_side: int | None = None) -> dict:
    """SAM's automatic masks of ``image`` (a :class:`ovseg.sam.masks.SamMasks`), labelled:
    :func:`segment_masks`' result plus ``mask_set`` (the :class:`MaskSet`). ``short_side``:
    the frozen CLIP's test resize (SAM sees the image at its own size)."""
    from ovseg.preprocess import as_rgb_array

    array = as_rgb_array(image)
    mask_set = sam_masks.automatic(array)
    result = segment_masks(
        predictor,
        array,
        mask_set.masks,
        mask_scores=mask_set.scores,
        tasks=tasks,
        short_side=short_side,
    )
    result["mask_set"] = mask_set
    return result


@torch.no_grad()
def segment_prompts(
    predictor,
    image,
    *,
    points=None,
    point_labels=None,
    boxes=None,
    prompts: Prompts | None = None,
    sam=None,
    short_side: int | None = None,
) -> dict:
    """Masks for point / box prompts and their open-vocabulary labels.

    The masks come from ``sam`` (a :class:`ovseg.sam.masks.SamMasks`) when given, else from
    the model's prompt head (one image pass: the frozen CLIP features serve both). Returns a
    result with ``instances`` (one per prompt object, in prompt order: masks (N, h, w) bool,
    boxes, scores = best class probability x mask score, labels) and ``prompts``: per object
    {"prompt", "mask_score", "top_classes"}; plus ``mask_probs`` (N, K). ``short_side``: the
    test resize of the image pass (default: the config's).
    Raises PromptError for bad prompts, ValueError when there is no mask source.
    """
    from ovseg.preprocess import as_rgb_array

    array = as_rgb_array(image)
    if prompts is None:
        prompts = make_prompts(points, point_labels, boxes, image_size=array.shape[:2])
    else:
        prompts = make_prompts(
            prompts.points, prompts.point_labels, prompts.boxes, image_size=array.shape[:2]
        )
    features = predictor.encode(array, short_side=short_side)
    if sam is not None:
        mask_set = sam.prompted(array, prompts)
    elif getattr(predictor.model, "prompt_head", None) is not None:
        mask_set = predictor.prompt_head_masks(features, prompts)
    else:
        raise ValueError(
            f"model {predictor.model_name} has no prompt head: use SAM for prompts "
            "(--masks sam, or sam=SamMasks(...)) or a model with a prompt head (synthetic_tiny)"
        )
    return _prompted_result(predictor, features, mask_set)


def _prompted_result(predictor, features, mask_set: MaskSet) -> dict:
    probs = class_probabilities(
        predictor.model,
        predictor.pool_masks(features, mask_set.masks),
        predictor.classifier,
        features.clip_dense,
    )
    out_hw = predictor.output_size(*features.image_size)
    masks = masks_at_output(predictor, mask_set.masks, features.image_size, out_hw)
    best, labels = probs.max(-1)
    quality = torch.as_tensor(mask_set.scores, device=best.device).float()
    listed = top_classes(probs, predictor.vocabulary.names, TOP_CLASSES)
    return {
        "image_size": tuple(features.image_size),
        "output_size": out_hw,
        "vocabulary": predictor.vocabulary,
        "mask_probs": probs,
        "instances": {
            "masks": masks,
            "boxes": postprocess.masks_to_boxes(masks),
            "scores": best * quality,
            "labels": labels,
        },
        "prompts": [
            {"prompt": source, "mask_score": float(score), "top_classes": classes}
            for source, score, classes in zip(
                mask_set.sources, mask_set.scores.tolist(), listed, strict=True
            )
        ],
    }
