"""Panoptic quality (PQ / SQ / RQ) with the exact semantics of COCO panopticapi's pq_compute.

Per image, one ``np.bincount`` over ``gt_index * (num_pred + 1) + pred_index`` gives the whole
gt x pred intersection table (row / column 0 = void); matching, false positives and false
negatives are then decided per segment with array operations, never per pixel in Python.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.label_io import id_to_rgb
from ovseg.fileio import atomic_write

# Ids are written as R + 256 G + 256^2 B in COCO panoptic PNGs.
MAX_PNG_SEGMENT_ID = 256**3
# Maps whose ids are all below this are indexed through a dense lookup table.
_LOOKUP_TABLE_LIMIT = 1 << 16


def _segment_table(
    segments: Sequence[dict], num_classes: int, what: str, *, with_crowd: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """segments [{"id", "category_id", ("iscrowd")}] -> ids (S,), categories (S,), crowd (S,)."""
    ids = np.array([int(s["id"]) for s in segments], dtype=np.int64)
    categories = np.array([int(s["category_id"]) for s in segments], dtype=np.int64)
    if with_crowd:
        crowd = np.array([bool(s.get("iscrowd", 0)) for s in segments], dtype=bool)
    else:
        crowd = np.zeros(len(segments), dtype=bool)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{what} segment list has duplicate ids: {ids.tolist()}")
    if (ids <= 0).any():
        raise ValueError(f"{what} segment ids must be positive (0 = void), got {ids.tolist()}")
    bad = (categories < 0) | (categories >= num_classes)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what} segment {int(ids[index])} has category_id {int(categories[index])}, "
            f"expected a contiguous index in [0, {num_classes})"
        )
    return ids, categories, crowd


def _to_local_index(panoptic: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Segment-id map (H, W) -> flat (H*W,) int64: 0 = void, i + 1 = pixel belongs to ids[i].

    Raises ValueError naming the first id present in the map but absent from ``ids``."""
    flat = panoptic.reshape(-1)
    table_ids = np.concatenate([[0], ids])  # table index = local index, 0 = void
    low, high = (int(flat.min()), int(flat.max())) if flat.size else (0, 0)
    high = max(high, int(table_ids.max()))
    if low >= 0 and high < _LOOKUP_TABLE_LIMIT:
        # Small ids (model outputs): one gather through a dense table.
        lookup = np.full(high + 1, -1, dtype=np.int64)
        lookup[table_ids] = np.arange(len(table_ids))
        local = lookup[flat]
        unknown = local < 0
    else:
        # Large ids (COCO's R + 256 G + 256^2 B): binary search in the sorted ids.
        order = np.argsort(table_ids)
        sorted_ids = table_ids[order]
        # Values above the largest id land one past the end: repeat the last entry there.
        position = np.searchsorted(sorted_ids, flat)
        local = np.append(order, order[-1])[position]
        unknown = np.append(sorted_ids, sorted_ids[-1])[position] != flat
    if unknown.any():
        raise ValueError(
            f"{what} map contains segment id {int(flat[unknown][0])} "
            "which is not in its segment list"
        )
    return local


def _as_id_map(panoptic: Any, what: str) -> np.ndarray:
    array = np.asarray(panoptic)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be an (H, W) integer array, got {array.dtype} {array.shape}")
    return array.astype(np.int64, copy=False)


class PanopticEvaluator:
    """Accumulates per-class TP / FP / FN / summed IoU over images; ``compute`` gives PQ.

    Args:
        categories: K dicts ``{"id": contiguous index, "name": str, "isthing": bool}``.
        seen: optional K bools (class seen in training) for the Seen / Unseen split.
    """

    def __init__(self, categories: Sequence[dict], *, seen: Sequence[bool] | None = None):
        ids = [int(c["id"]) for c in categories]
        if ids != list(range(len(categories))):
            raise ValueError(f"category ids must be 0..K-1 in order, got {ids}")
        if seen is not None and len(seen) != len(categories):
            raise ValueError(f"seen has {len(seen)} entries for {len(categories)} categories")
        self.names = [str(c["name"]) for c in categories]
        self.is_thing = np.array([bool(c["isthing"]) for c in categories], dtype=bool)
        self.seen = None if seen is None else np.array(seen, dtype=bool)
        self.reset()

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def reset(self) -> None:
        k = self.num_classes
        self.iou_sum = np.zeros(k, dtype=np.float64)
        self.tp = np.zeros(k, dtype=np.int64)
        self.fp = np.zeros(k, dtype=np.int64)
        self.fn = np.zeros(k, dtype=np.int64)
        self.num_images = 0

    def update(
        self,
        gt_panoptic: np.ndarray,
        gt_segments: Sequence[dict],
        pred_panoptic: np.ndarray,
        pred_segments: Sequence[dict],
    ) -> None:
        """Add one image. Maps are (H, W) integer segment ids, 0 = void / no segment.

        gt_segments: [{"id", "category_id", "iscrowd"}]; pred_segments: [{"id", "category_id"}];
        category_id is the contiguous class index. Every non-zero id in a map must be listed,
        and every listed prediction must own at least one pixel (as panopticapi requires).
        """
        gt_map = _as_id_map(gt_panoptic, "gt_panoptic")
        pred_map = _as_id_map(pred_panoptic, "pred_panoptic")
        if gt_map.shape != pred_map.shape:
            raise ValueError(f"gt {gt_map.shape} and prediction {pred_map.shape} shapes differ")
        k = self.num_classes
        gt_ids, gt_cat, gt_crowd = _segment_table(gt_segments, k, "gt", with_crowd=True)
        pred_ids, pred_cat, _ = _segment_table(pred_segments, k, "prediction", with_crowd=False)
        gt_local = _to_local_index(gt_map, gt_ids, "gt")
        pred_local = _to_local_index(pred_map, pred_ids, "prediction")

        # counts[g, p]: pixels with gt segment g-1 and predicted segment p-1 (index 0 = void).
        num_cols = len(pred_ids) + 1
        counts = np.bincount(
            gt_local * num_cols + pred_local, minlength=(len(gt_ids) + 1) * num_cols
        ).reshape(len(gt_ids) + 1, num_cols)
        gt_area = counts[1:].sum(axis=1)  # (G,)
        pred_area = counts[:, 1:].sum(axis=0)  # (P,) including pixels on gt void
        pred_on_void = counts[0, 1:]  # (P,)
        intersection = counts[1:, 1:]  # (G, P)
        if (pred_area == 0).any():
            missing = int(pred_ids[np.flatnonzero(pred_area == 0)[0]])
            raise ValueError(f"prediction segment {missing} is listed but has no pixels")

        # Matching: same category, gt not crowd, IoU > 0.5 with gt-void pixels left out.
        candidate = (intersection > 0) & ~gt_crowd[:, None] & (gt_cat[:, None] == pred_cat[None, :])
        union = gt_area[:, None] + pred_area[None, :] - intersection - pred_on_void[None, :]
        iou = np.divide(intersection, union, out=np.zeros(union.shape), where=candidate)
        matched = candidate & (iou > 0.5)
        gt_rows, pred_cols = np.nonzero(matched)
        self.tp += np.bincount(gt_cat[gt_rows], minlength=k)
        self.iou_sum += np.bincount(gt_cat[gt_rows], weights=iou[gt_rows, pred_cols], minlength=k)

        gt_unmatched = ~matched.any(axis=1)
        self.fn += np.bincount(gt_cat[gt_unmatched & ~gt_crowd], minlength=k)

        # panopticapi keeps one crowd segment per category: the last one listed.
        crowd_row_of_category = np.full(k, -1, dtype=np.int64)
        for row in np.flatnonzero(gt_crowd):
            crowd_row_of_category[gt_cat[row]] = row
        ignored_area = pred_on_void.copy()
        crowd_rows = crowd_row_of_category[pred_cat]
        on_crowd = np.flatnonzero(crowd_rows >= 0)
        ignored_area[on_crowd] += intersection[crowd_rows[on_crowd], on_crowd]
        # An unmatched prediction mostly (> 50%) on void + same-class crowd is not a FP.
        false_positive = ~matched.any(axis=0) & ~(ignored_area / pred_area > 0.5)
        self.fp += np.bincount(pred_cat[false_positive], minlength=k)
        self.num_images += 1

    def per_class(self) -> dict[str, np.ndarray]:
        """Per-class pq, sq, rq (fractions; NaN where tp + fp + fn == 0) and counted (K,) bool."""
        counted = (self.tp + self.fp + self.fn) > 0
        denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
        safe = np.where(counted, denominator, 1.0)
        pq = np.where(counted, self.iou_sum / safe, np.nan)
        rq = np.where(counted, self.tp / safe, np.nan)
        sq = np.where(self.tp > 0, self.iou_sum / np.maximum(self.tp, 1), 0.0)
        sq = np.where(counted, sq, np.nan)
        return {"pq": pq, "sq": sq, "rq": rq, "counted": counted}

    def compute(self) -> dict[str, Any]:
        """-> {"All" | "Things" | "Stuff" [| "Seen" | "Unseen"]: {"pq", "sq", "rq", "n"},
        "per_class": {name: {"pq", "sq", "rq", "tp", "fp", "fn"}}}; pq/sq/rq in percent.

        Averages are over the n classes of the group with tp + fp + fn > 0 (panopticapi);
        a group with n == 0 reports NaN. Per-class values are NaN for uncounted classes."""
        stats = self.per_class()

        def average(group: np.ndarray) -> dict[str, float]:
            use = group & stats["counted"]
            n = int(use.sum())
            if n == 0:
                return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}
            return {key: 100.0 * float(stats[key][use].mean()) for key in ("pq", "sq", "rq")} | {
                "n": n
            }

        everything = np.ones(self.num_classes, dtype=bool)
        results: dict[str, Any] = {
            "All": average(everything),
            "Things": average(self.is_thing),
            "Stuff": average(~self.is_thing),
        }
        if self.seen is not None:
            results["Seen"] = average(self.seen)
            results["Unseen"] = average(~self.seen)
        results["per_class"] = {
            name: {
                "pq": 100.0 * float(stats["pq"][i]),
                "sq": 100.0 * float(stats["sq"][i]),
                "rq": 100.0 * float(stats["rq"][i]),
                "tp": int(self.tp[i]),
                "fp": int(self.fp[i]),
                "fn": int(self.fn[i]),
            }
            for i, name in enumerate(self.names)
        }
        return results

    @staticmethod
    def format_table(results: dict[str, Any]) -> str:
        """The summary rows of ``compute()`` as a fixed-width text table."""
        lines = [f"{'':8s} {'PQ':>7s} {'SQ':>7s} {'RQ':>7s} {'#classes':>9s}"]
        for row in ("All", "Things", "Stuff", "Seen", "Unseen"):
            if row in results:
                r = results[row]
                lines.append(f"{row:8s} {r['pq']:7.2f} {r['sq']:7.2f} {r['rq']:7.2f} {r['n']:9d}")
        return "\n".join(lines)


def _bounding_boxes(local: np.ndarray, num_segments: int) -> np.ndarray:
    """local (H, W) index map (0 = void, i + 1 = segment i) -> (S, 4) int [x, y, w, h]."""
    height, width = local.shape
    rows = np.zeros((num_segments + 1, height), dtype=bool)
    cols = np.zeros((num_segments + 1, width), dtype=bool)
    rows[local, np.arange(height)[:, None]] = True
    cols[local, np.arange(width)[None, :]] = True
    rows, cols = rows[1:], cols[1:]
    y0 = rows.argmax(axis=1)
    y1 = height - 1 - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = width - 1 - cols[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)


def write_coco_panoptic(
    out_dir: str | os.PathLike,
    json_name: str,
    items: Sequence[dict],
    categories_json: Sequence[dict],
) -> Path:
    """Write predictions in the COCO panoptic results format; returns the JSON path.

    PNGs go to ``out_dir/<json_name without .json>/<stem of file_name>.png`` (where
    panopticapi's pq_compute looks by default), id = R + 256 G + 256^2 B; the JSON holds
    ``annotations: [{image_id, file_name, segments_info: [{id, category_id, (isthing), area,
    bbox [x, y, w, h]}]}]`` and the categories. Every file is written under a temporary name
    and renamed.

    Args:
        items: [{"image_id", "file_name", "panoptic": (H, W) int, "segments": [{"id",
            "category_id" (contiguous)}]}].
        categories_json: dataset category dicts (with the dataset "id") in contiguous order.
    """
    annotations = write_panoptic_pngs(out_dir, json_name, items, categories_json)
    return write_panoptic_json(out_dir, json_name, annotations, categories_json)


def write_panoptic_pngs(
    out_dir: str | os.PathLike,
    json_name: str,
    items: Sequence[dict],
    categories_json: Sequence[dict],
) -> list[dict]:
    """The PNG half of :func:`write_coco_panoptic` (each process of a distributed evaluation
    writes its own images); returns the items' JSON annotations."""
    from PIL import Image

    png_dir = Path(out_dir) / Path(json_name).stem
    png_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    for item in items:
        panoptic = _as_id_map(item["panoptic"], f"panoptic of image {item['image_id']}")
        ids, categories, _ = _segment_table(
            item["segments"], len(categories_json), f"image {item['image_id']}", with_crowd=False
        )
        if len(ids) and ids.max() >= MAX_PNG_SEGMENT_ID:
            raise ValueError(f"segment ids must be below {MAX_PNG_SEGMENT_ID} for a PNG")
        local = _to_local_index(panoptic, ids, f"image {item['image_id']}").reshape(panoptic.shape)
        areas = np.bincount(local.reshape(-1), minlength=len(ids) + 1)[1:]
        if (areas == 0).any():
            empty = int(ids[np.flatnonzero(areas == 0)[0]])
            raise ValueError(f"image {item['image_id']}: segment {empty} has no pixels")
        boxes = _bounding_boxes(local, len(ids))
        segments_info = []
        for i in range(len(ids)):
            category = categories_json[int(categories[i])]
            info = {"id": int(ids[i]), "category_id": int(category["id"])}
            if "isthing" in category:
                info["isthing"] = category["isthing"]
            info |= {"area": int(areas[i]), "bbox": [int(v) for v in boxes[i]]}
            segments_info.append(info)

        png_name = Path(str(item["file_name"])).stem + ".png"
        image = Image.fromarray(id_to_rgb(panoptic))
        atomic_write(png_dir / png_name, lambda tmp, im=image: im.save(tmp, format="PNG"))
        annotations.append(
            {"image_id": item["image_id"], "file_name": png_name, "segments_info": segments_info}
        )
    return annotations


def write_panoptic_json(
    out_dir: str | os.PathLike,
    json_name: str,
    annotations: Sequence[dict],
    categories_json: Sequence[dict],
) -> Path:
    """The JSON half of :func:`write_coco_panoptic`; returns its path."""
    json_path = Path(out_dir) / json_name
    payload = json.dumps({"annotations": list(annotations), "categories": list(categories_json)})
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(payload, encoding="utf-8"))
    return json_path
