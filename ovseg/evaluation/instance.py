"""Mask and box AP with pycocotools' COCOeval on datasets built in memory (no files)."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# COCOeval's area ranges (gt "area", pixels) behind each metric.
AREA_RANGES = {
    "AP": (0, 1e10),
    "AP50": (0, 1e10),
    "AP75": (0, 1e10),
    "APs": (0, 32**2),
    "APm": (32**2, 96**2),
    "APl": (96**2, 1e10),
}


def _encode(masks: np.ndarray) -> list[dict]:
    """(N, H, W) bool -> N COCO RLEs."""
    from pycocotools import mask as mask_util

    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    return list(mask_util.encode(fortran)) if masks.shape[0] else []


def _check_masks(masks: Any, what: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"{what} masks must be (N, H, W), got shape {masks.shape}")
    return masks.astype(bool, copy=False)


class InstanceEvaluator:
    """Collects gt and predicted instances per image; ``compute`` runs COCOeval (segm, bbox).

    Args:
        categories: K dicts ``{"id": contiguous index, "name": str, ...}``; labels index them.
            Classes without gt instances are left out of the averages (COCOeval).
        verbose: let pycocotools print its progress and summary tables.
    """

    def __init__(self, categories: Sequence[dict], *, verbose: bool = False):
        ids = [int(c["id"]) for c in categories]
        if ids != list(range(len(categories))):
            raise ValueError(f"category ids must be 0..K-1 in order, got {ids}")
        self.names = [str(c["name"]) for c in categories]
        self.verbose = verbose
        self.reset()

    def reset(self) -> None:
        self.images: dict[Any, dict] = {}
        self.gt_annotations: list[dict] = []
        self.predictions: list[dict] = []

    def _check_labels(self, labels: np.ndarray, count: int, what: str) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != count:
            raise ValueError(f"{what}: {len(labels)} labels for {count} masks")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.names)):
            raise ValueError(f"{what}: labels must be in [0, {len(self.names)})")
        return labels

    def add_ground_truth(
        self, image_id: Any, masks: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray
    ) -> None:
        """masks (N, H, W) bool, labels (N,) contiguous class, iscrowd (N,) bool; N may be 0."""
        from pycocotools import mask as mask_util

        if image_id in self.images:
            raise ValueError(f"ground truth for image {image_id!r} was already added")
        masks = _check_masks(masks, "gt")
        labels = self._check_labels(labels, masks.shape[0], "gt")
        iscrowd = np.asarray(iscrowd, dtype=bool).reshape(-1)
        if len(iscrowd) != masks.shape[0]:
            raise ValueError(f"gt: {len(iscrowd)} iscrowd flags for {masks.shape[0]} masks")
        self.images[image_id] = {
            "id": len(self.images) + 1,
            "height": masks.shape[1],
            "width": masks.shape[2],
        }
        rles = _encode(masks)
        areas = mask_util.area(rles) if rles else []
        boxes = mask_util.toBbox(rles) if rles else []
        for rle, label, crowd, area, box in zip(rles, labels, iscrowd, areas, boxes, strict=True):
            self.gt_annotations.append(
                {
                    "id": len(self.gt_annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                    "image_id": self.images[image_id]["id"],
                    "category_id": int(label) + 1,
                    "segmentation": rle,
                    "area": float(area),
                    "bbox": [float(v) for v in box],
                    "iscrowd": int(crowd),
                }
            )

    def add_prediction(
        self,
        image_id: Any,
        masks: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        boxes: np.ndarray | None = None,
    ) -> None:
        """masks (M, H, W) bool, scores (M,), labels (M,), boxes (M, 4) xyxy or None (from the
        masks' extents). May be called before or after the image's ground truth."""
        from pycocotools import mask as mask_util

        masks = _check_masks(masks, "prediction")
        labels = self._check_labels(labels, masks.shape[0], "prediction")
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != masks.shape[0]:
            raise ValueError(f"prediction: {len(scores)} scores for {masks.shape[0]} masks")
        rles = _encode(masks)
        if boxes is None:
            boxes_xywh = mask_util.toBbox(rles) if rles else np.zeros((0, 4))
        else:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if len(boxes) != masks.shape[0]:
                raise ValueError(f"prediction: {len(boxes)} boxes for {masks.shape[0]} masks")
            boxes_xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        for rle, score, label, box in zip(rles, scores, labels, boxes_xywh, strict=True):
            self.predictions.append(
                {
                    "image_key": image_id,
                    "category_id": int(label) + 1,
                    "segmentation": rle,
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )

    def state(self) -> dict:
        """What was added (images, ground truth, predictions), to send to another process."""
        return {
            "images": self.images,
            "gt_annotations": self.gt_annotations,
            "predictions": self.predictions,
        }

    def merge_shards(self, states: list[dict]) -> None:
        """Replace the contents with the union of the :meth:`state` s of ``len(states)``
        processes, rank order, where rank r added images r, r + W, r + 2W ... of one list
        (:func:`ovseg.distributed.shard`): images, annotations and predictions are numbered
        and ordered as one process adding the whole list would have, so COCOeval (whose ties
        follow that order) gives the same AP. ValueError for an image added twice."""
        world_size = len(states)
        entries = sorted(
            (rank + (info["id"] - 1) * world_size, rank, key, info)
            for rank, state in enumerate(states)
            for key, info in state["images"].items()
        )
        self.reset()
        new_id, position = {}, {}
        for place, rank, key, info in entries:
            if key in self.images:
                raise ValueError(f"image {key!r} was evaluated by two processes")
            self.images[key] = {**info, "id": len(self.images) + 1}
            new_id[(rank, info["id"])] = self.images[key]["id"]
            position[key] = place
        annotations = sorted(
            (new_id[(rank, a["image_id"])], a["id"], a)
            for rank, state in enumerate(states)
            for a in state["gt_annotations"]
        )
        for image_id, _, annotation in annotations:
            number = len(self.gt_annotations) + 1
            self.gt_annotations.append({**annotation, "id": number, "image_id": image_id})
        predictions = sorted(
            (position.get(p["image_key"], -1), rank, index, p)
            for rank, state in enumerate(states)
            for index, p in enumerate(state["predictions"])
        )
        self.predictions = [p for *_, p in predictions]

    def _quiet(self) -> contextlib.AbstractContextManager:
        if self.verbose:
            return contextlib.nullcontext()
        return contextlib.redirect_stdout(io.StringIO())

    def compute(self) -> dict[str, dict[str, float]]:
        """-> {"segm": {AP, AP50, AP75, APs, APm, APl}, "bbox": {...}} in percent.

        NaN (undefined, as PQ for a class never seen) where there is no ground truth to find:
        no non-crowd gt instance at all (pycocotools' -1), or none in an area range (APs /
        APm / APl). Without predictions, AP is 0 wherever there is ground truth."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if not self.predictions:
            return {iou_type: self._without_predictions() for iou_type in ("segm", "bbox")}
        unknown = {p["image_key"] for p in self.predictions} - set(self.images)
        if unknown:
            raise ValueError(f"predictions for images without ground truth: {sorted(unknown)}")
        dataset = {
            "images": list(self.images.values()),
            "annotations": self.gt_annotations,
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(self.names)],
        }
        results: dict[str, dict[str, float]] = {}
        with self._quiet():
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(dataset)
            coco_gt.createIndex()
            for iou_type in ("segm", "bbox"):
                detections = []
                for p in self.predictions:
                    detection = {k: v for k, v in p.items() if k != "image_key"}
                    detection["image_id"] = self.images[p["image_key"]]["id"]
                    if iou_type == "segm":
                        # loadRes would otherwise replace the mask by the box polygon.
                        detection.pop("bbox")
                    else:
                        detection.pop("segmentation")
                    detections.append(detection)
                coco_dt = coco_gt.loadRes(detections)
                evaluator = COCOeval(coco_gt, coco_dt, iou_type)
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
                results[iou_type] = {
                    name: 100.0 * float(value) if value >= 0 else math.nan
                    for name, value in zip(METRICS, evaluator.stats[:6], strict=True)
                }
        return results

    def _without_predictions(self) -> dict[str, float]:
        """COCOeval's answer when nothing was predicted: 0 where some non-crowd gt instance
        lies in the metric's area range (all missed), NaN where none does (undefined)."""
        areas = [a["area"] for a in self.gt_annotations if not a["iscrowd"]]
        return {
            name: 0.0 if any(low <= area <= high for area in areas) else math.nan
            for name, (low, high) in AREA_RANGES.items()
        }

    @staticmethod
    def format_table(results: dict[str, dict[str, float]]) -> str:
        """``compute()`` as a text table: rows segm / bbox, columns AP .. APl; a last line
        says so when AP is undefined (nothing to find)."""
        lines = [f"{'':5s} " + " ".join(f"{m:>6s}" for m in METRICS)]
        for iou_type, values in results.items():
            lines.append(f"{iou_type:5s} " + " ".join(f"{values[m]:6.2f}" for m in METRICS))
        if any(math.isnan(values["AP"]) for values in results.values()):
            lines.append("nan: undefined, no ground-truth instance to find (not a score of 0)")
        return "\n".join(lines)
