"""Semantic segmentation metrics (mIoU, fwIoU, mACC, pACC), detectron2 SemSegEvaluator rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class SemanticEvaluator:
    """Accumulates a (K, K) confusion matrix [gt, pred] with one bincount per image.

    Definitions follow detectron2's current SemSegEvaluator: a class with no gt pixels has
    IoU / accuracy NaN and is left out of every mean, even when it was predicted (its false
    positives still lower the IoU of the gt classes they cover).

    Args:
        num_classes: K; predictions must be in [0, K).
        ignore_index: gt value that is skipped.
        class_names: K names for ``per_class_iou`` (default "0".."K-1").
        seen: optional K bools; adds "mIoU_seen" / "mIoU_unseen".
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        seen: Sequence[bool] | None = None,
    ):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        if seen is not None and len(seen) != num_classes:
            raise ValueError(f"seen has {len(seen)} entries for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = (
            [str(i) for i in range(num_classes)] if class_names is None else list(class_names)
        )
        self.seen = None if seen is None else np.array(seen, dtype=bool)
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """pred (H, W) int class indices in [0, K); gt (H, W) int, ``ignore_index`` = skip."""
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and gt {gt.shape} shapes differ")
        for name, array in (("prediction", pred), ("gt", gt)):
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{name} must be an integer array, got {array.dtype}")
        keep = gt != self.ignore_index
        gt = gt[keep].astype(np.int64)
        pred = pred[keep].astype(np.int64)
        k = self.num_classes
        for name, values in (("prediction", pred), ("gt", gt)):
            if values.size and (values.min() < 0 or values.max() >= k):
                bad = values[(values < 0) | (values >= k)][0]
                raise ValueError(f"{name} has class {int(bad)} outside [0, {k})")
        self.confusion += np.bincount(gt * k + pred, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, Any]:
        """-> {"mIoU", "fwIoU", "mACC", "pACC", "per_class_iou": {name: iou}
        [, "mIoU_seen", "mIoU_unseen"]}, all in percent; NaN per class where gt is absent."""
        true_positive = np.diag(self.confusion).astype(np.float64)
        gt_pixels = self.confusion.sum(axis=1).astype(np.float64)
        pred_pixels = self.confusion.sum(axis=0).astype(np.float64)
        union = gt_pixels + pred_pixels - true_positive
        present = gt_pixels > 0
        acc = np.full(self.num_classes, np.nan)
        iou = np.full(self.num_classes, np.nan)
        acc[present] = true_positive[present] / gt_pixels[present]
        iou[present] = true_positive[present] / union[present]
        total = gt_pixels.sum()

        def mean(values: np.ndarray, group: np.ndarray) -> float:
            use = group & present
            return 100.0 * float(values[use].mean()) if use.any() else float("nan")

        everything = np.ones(self.num_classes, dtype=bool)
        results: dict[str, Any] = {
            "mIoU": mean(iou, everything),
            "fwIoU": 100.0 * float((iou[present] * gt_pixels[present]).sum() / total)
            if total
            else float("nan"),
            "mACC": mean(acc, everything),
            "pACC": 100.0 * float(true_positive.sum() / total) if total else float("nan"),
        }
        if self.seen is not None:
            results["mIoU_seen"] = mean(iou, self.seen)
            results["mIoU_unseen"] = mean(iou, ~self.seen)
        results["per_class_iou"] = {
            name: 100.0 * float(iou[i]) for i, name in enumerate(self.class_names)
        }
        return results

    @staticmethod
    def format_table(results: dict[str, Any]) -> str:
        """The summary numbers of ``compute()`` as a one-row text table."""
        keys = [
            key
            for key in ("mIoU", "fwIoU", "mACC", "pACC", "mIoU_seen", "mIoU_unseen")
            if key in results
        ]
        header = " ".join(f"{key:>11s}" for key in keys)
        values = " ".join(f"{results[key]:11.2f}" for key in keys)
        return f"{header}\n{values}"
