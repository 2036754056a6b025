"""Training and test transforms on sample dicts (see ovseg.data.panoptic for the keys).

Images are resized with PIL bilinear; masks, panoptic ids and sem_seg with nearest neighbour
(bit-exact with PIL NEAREST, see nearest_indices), so masks stay exactly 0/1 and every label
map stays consistent with the masks. Masks that become empty are
dropped with their labels, and segments_info keeps only the ids still in the panoptic map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovseg.preprocess import resize_image, shortest_edge_size

IMAGE_PAD_VALUE = 128
IGNORE_LABEL = 255


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """(out_size,) int64 source index of each output pixel of a nearest-neighbour resize.

    Bit-exact with PIL's NEAREST resize (the reference resizes label PNGs with PIL): output
    pixel i reads floor((i + 0.5) * in / out), with the position accumulated by repeated
    float64 addition as PIL does, which differs from the closed form on exact ties.
    """
    steps = np.full(out_size, in_size / out_size)
    steps[0] *= 0.5
    return np.minimum(np.cumsum(steps).astype(np.int64), in_size - 1)


def _resample_labels(
    sample: dict[str, Any], rows: np.ndarray, cols: np.ndarray, out: dict[str, Any]
) -> None:
    """Fill ``out`` with masks / panoptic / sem_seg / valid read at source pixels rows x cols."""
    grid = np.ix_(rows, cols)
    if "masks" in sample:
        out["masks"] = sample["masks"][:, grid[0], grid[1]]
    for key in ("panoptic", "sem_seg", "valid"):
        if key in sample:
            out[key] = sample[key][grid]


def _drop_empty(out: dict[str, Any]) -> None:
    """Remove masks (and labels) with no pixel and segments whose id left the panoptic map."""
    if "masks" in out:
        keep = out["masks"].any(axis=(1, 2))
        out["masks"] = out["masks"][keep]
        if "labels" in out:
            out["labels"] = np.asarray(out["labels"])[keep]
    if "panoptic" in out and "segments_info" in out:
        present = set(np.unique(out["panoptic"]).tolist())
        out["segments_info"] = [dict(s) for s in out["segments_info"] if s["id"] in present]


def _pad(array: np.ndarray, height: int, width: int, value, *, leading: int = 0) -> np.ndarray:
    """Pad the bottom/right of the (..., h, w[, 3]) array to height x width with ``value``;
    ``leading`` is the number of axes before h (1 for (N, h, w) masks)."""
    widths = [(0, 0)] * array.ndim
    widths[leading] = (0, height - array.shape[leading])
    widths[leading + 1] = (0, width - array.shape[leading + 1])
    return np.pad(array, widths, constant_values=value)


class LargeScaleJitter:
    """Large-scale jitter (spec s.9): random horizontal flip, resize by a random scale of a
    square target (aspect kept), random crop, bottom/right padding.

    ``t(sample, rng)`` -> a new sample with image (crop, crop, 3) uint8, masks (N', crop, crop)
    bool, panoptic / sem_seg (crop, crop) and ``valid`` (crop, crop) bool (False on padding).
    Every random number comes from ``rng`` (a numpy Generator), three draws per call in a fixed
    order (flip, scale, crop offset), so a seeded run is reproducible. As in detectron2's
    FixedSizeCrop, one uniform number places the crop along both axes.
    """

    def __init__(
        self,
        crop_size: int = 1024,
        min_scale: float = 0.1,
        max_scale: float = 2.0,
        flip: bool = True,
    ) -> None:
        if crop_size < 1 or not 0 < min_scale <= max_scale:
            raise ValueError(
                f"need crop_size >= 1 and 0 < min_scale <= max_scale, got {crop_size}, "
                f"{min_scale}, {max_scale}"
            )
        self.crop_size = crop_size
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.flip = flip

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        crop = self.crop_size
        height, width = sample["image"].shape[:2]
        flip = bool(rng.random() < 0.5) and self.flip
        scale = rng.uniform(self.min_scale, self.max_scale)
        offset_fraction = rng.random()

        factor = min(crop * scale / height, crop * scale / width)
        new_h = max(1, int(np.round(height * factor)))
        new_w = max(1, int(np.round(width * factor)))
        top = int(np.round(max(new_h - crop, 0) * offset_fraction))
        left = int(np.round(max(new_w - crop, 0) * offset_fraction))
        out_h, out_w = min(crop, new_h), min(crop, new_w)

        image = sample["image"][:, ::-1] if flip else sample["image"]
        image = resize_image(np.ascontiguousarray(image), (new_h, new_w))
        out = dict(sample)
        out["image"] = _pad(
            image[top : top + out_h, left : left + out_w], crop, crop, IMAGE_PAD_VALUE
        )
        rows = nearest_indices(height, new_h)[top : top + out_h]
        cols = nearest_indices(width, new_w)[left : left + out_w]
        if flip:
            cols = width - 1 - cols
        _resample_labels(sample, rows, cols, out)
        if "masks" in out:
            out["masks"] = _pad(out["masks"], crop, crop, False, leading=1)
        if "panoptic" in out:
            out["panoptic"] = _pad(out["panoptic"], crop, crop, 0)
        if "sem_seg" in out:
            out["sem_seg"] = _pad(out["sem_seg"], crop, crop, IGNORE_LABEL)
        valid = np.zeros((crop, crop), dtype=bool)
        valid[:out_h, :out_w] = True
        out["valid"] = valid
        _drop_empty(out)
        return out


class ResizeShortEdge:
    """Test-time resize (spec s.1): short side -> ``short``, long side at most ``max_size``.

    ``t(sample)`` -> a new sample at (h', w') from ovseg.preprocess.shortest_edge_size: image
    PIL bilinear, masks / panoptic / sem_seg nearest. ``rng`` is accepted and unused.
    """

    def __init__(self, short: int, max_size: int) -> None:
        self.short = short
        self.max_size = max_size

    def __call__(
        self, sample: dict[str, Any], rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        height, width = sample["image"].shape[:2]
        new_h, new_w = shortest_edge_size(height, width, self.short, self.max_size)
        out = dict(sample)
        out["image"] = resize_image(sample["image"], (new_h, new_w))
        rows, cols = nearest_indices(height, new_h), nearest_indices(width, new_w)
        _resample_labels(sample, rows, cols, out)
        _drop_empty(out)
        return out
