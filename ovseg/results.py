"""Results as data: per-task segment lists, label maps, COCO RLE masks and JSON records.

``describe`` turns a predictor result into one task's (label map, segments); the record
functions turn segments into the JSON written by the command line, the web demo and video.
Pictures are drawn by :mod:`ovseg.visualize`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ovseg.data.label_io import id_to_rgb
from ovseg.modeling.postprocess import masks_to_boxes

# Instances drawn and listed by the front ends (the detectron2 / Mask2Former demos' default);
# the JSON keeps every instance, marked ``shown``.
INSTANCE_SCORE_THRESHOLD = 0.5


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of an (H, W) bool mask, JSON-ready: {"size": [H, W], "counts": str}."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _semantic_segments(result: dict, score_threshold: float) -> tuple[np.ndarray, list[dict]]:
    vocab = result["vocabulary"]
    scores = result["sem_seg"]
    dtype = np.uint8 if len(vocab) < 255 else np.uint16
    label_np = scores.argmax(0).cpu().numpy().astype(dtype)
    # A pixel no mask scores (masks given from outside, e.g. SAM's) is void, not class 0.
    covered = (scores.sum(0) > 0).cpu().numpy()
    label_np[~covered] = np.iinfo(dtype).max
    # The per-pixel class distribution: each class's share of the pixel's scores (0..1).
    best = (scores.max(0).values / scores.sum(0).clamp(min=1e-12)).cpu()
    segments = []
    for class_id in np.unique(label_np[covered]).tolist():
        mask = label_np == class_id
        segments.append(
            {
                "id": class_id + 1,
                "class_id": class_id,
                "class": vocab.names[class_id],
                "isthing": bool(vocab.is_thing[class_id]),
                "score": float(best[torch.from_numpy(mask)].mean()),
                "mask": mask,
            }
        )
    return label_np, segments


def _panoptic_segments(result: dict, score_threshold: float) -> tuple[np.ndarray, list[dict]]:
    names = result["vocabulary"].names
    label_map = result["panoptic_seg"].cpu().numpy().astype(np.int32)
    segments = [
        {
            "id": info["id"],
            "class_id": info["category_id"],
            "class": names[info["category_id"]],
            "isthing": info["isthing"],
            "score": info["score"],
            "mask": label_map == info["id"],
        }
        for info in result["segments_info"]
    ]
    return label_map, segments


def _instance_segments(result: dict, score_threshold: float) -> tuple[np.ndarray, list[dict]]:
    vocab = result["vocabulary"]
    instances = result["instances"]
    masks = instances["masks"].cpu().numpy()
    scores = instances["scores"].cpu().numpy()
    label_map = np.zeros(
        masks.shape[1:] if masks.ndim == 3 else result["output_size"], dtype=np.uint16
    )
    for index in range(masks.shape[0] - 1, -1, -1):  # lowest score first, best on top
        if scores[index] >= score_threshold:
            label_map[masks[index]] = index + 1
    segments = []
    for index in range(masks.shape[0]):
        if not masks[index].any():
            continue  # an empty mask (score 0) is no detection
        class_id = int(instances["labels"][index])
        segments.append(
            {
                "id": index + 1,
                "class_id": class_id,
                "class": vocab.names[class_id],
                "isthing": bool(vocab.is_thing[class_id]),
                "score": float(scores[index]),
                "shown": bool(scores[index] >= score_threshold),
                "mask": masks[index],
            }
        )
    return label_map, segments


_SEGMENTS_OF_TASK = {
    "semantic": _semantic_segments,
    "panoptic": _panoptic_segments,
    "instance": _instance_segments,
    "prompts": _instance_segments,  # one instance per prompted object, in prompt order
}


def describe(
    result: dict, task: str, *, score_threshold: float = 0.0
) -> tuple[np.ndarray, list[dict]]:
    """Turn a predictor result into (label map, segments) for one task.

    Label maps: ``semantic`` class index per pixel (uint8, or uint16 above 254 classes; the
    value 255 / 65535 is never a class: it marks pixels no mask scored); ``panoptic``
    segment ids (int32, 0 = none, saved as COCO panoptic RGB); ``instance`` 1-based instance
    index of the instances scoring at least ``score_threshold`` (0 = none, higher score on
    top); ``prompts`` the same for prompted masks (:meth:`OVSegPredictor.segment_prompts`;
    index = the prompt object's, 1-based).
    Segments: id, class, class_id, isthing, score, area (pixels), box [x0, y0, x1, y1]
    (exclusive end), mask ((H, W) bool); instances also ``shown`` (score >= threshold).
    Scores are in [0, 1]: panoptic, the query's class probability; instance, class probability
    x mean mask probability inside the mask (Mask2Former); semantic, the mean over the
    segment's pixels of the class's share of the pixel's class scores (its probability there).
    Raises ValueError for an unknown task.
    """
    if task not in _SEGMENTS_OF_TASK:
        raise ValueError(f"unknown task '{task}': choose from {', '.join(_SEGMENTS_OF_TASK)}")
    label_map, segments = _SEGMENTS_OF_TASK[task](result, score_threshold)
    if segments:
        boxes = masks_to_boxes(torch.from_numpy(np.stack([s["mask"] for s in segments])))
        for segment, box in zip(segments, boxes, strict=True):
            segment["area"] = int(segment["mask"].sum())
            segment["box"] = [int(v) for v in box]
    return label_map, segments


def segment_records(segments: list[dict]) -> list[dict]:
    """``describe``'s segments as JSON records: every field, the mask as COCO RLE (``rle``)."""
    return [
        {k: v for k, v in s.items() if k != "mask"} | {"rle": mask_to_rle(s["mask"])}
        for s in segments
    ]


def label_map_image(label_map: np.ndarray, task: str) -> Image.Image:
    """The label PNG: panoptic ids in COCO's RGB encoding, other tasks' maps as they are."""
    if task == "panoptic":
        return Image.fromarray(id_to_rgb(label_map))
    return Image.fromarray(label_map)


def image_record(
    result: dict, segments: list[dict], *, task: str, model: str, image: str | None = None
) -> dict:
    """The JSON record of one image's result (the command line's NAME.json, the web demo's
    download): image, image_size and output_size [H, W], task, model, classes, segments."""
    record = {"image": str(image)} if image is not None else {}
    return record | {
        "image_size": list(result["image_size"]),
        "output_size": list(result["output_size"]),
        "task": task,
        "model": model,
        "classes": result["vocabulary"].names,
        "segments": segment_records(segments),
    }
