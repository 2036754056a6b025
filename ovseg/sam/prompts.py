"""Point and box prompts: parsing, checking, and grouping into objects.

Coordinates are pixels of the original image as segment-anything reads them: x is the column
and y the row (0, 0 is the top-left pixel); a point lies in 0 <= x < W, 0 <= y < H, a box
x0, y0, x1, y1 within 0..W and 0..H. Point labels: 1 = positive (on the object), 0 = negative.

A point names a pixel: its centre (x + 0.5, y + 0.5) is what a model is given, mapped into the
resized network input by :func:`network_points` (so a click on the last row or column stays on
the image at any scale). Boxes are edges and scale as they are.

Objects (one mask each), the rule of SAM's own demos: every box is one object; the points
together are one more object (positive and negative clicks refining one mask), except when
exactly one box is given, where the points refine that box's object (SAM's box + clicks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_POINTS = 64
MAX_BOXES = 64


class PromptError(ValueError):
    """A prompt that cannot be used; the message names it and says what to do."""


@dataclass(frozen=True)
class PromptObject:
    """One object's prompts: points (P, 2) float x, y; point_labels (P,) int 1 / 0; box (4,)
    x0, y0, x1, y1 or None."""

    points: np.ndarray
    point_labels: np.ndarray
    box: np.ndarray | None

    def describe(self) -> str:
        """'box 10,20,80,90 + 2 points' / '1 positive point at 40,50'."""
        parts = []
        if self.box is not None:
            parts.append("box " + ",".join(f"{v:g}" for v in self.box))
        if len(self.points):
            if len(self.points) == 1:
                kind = "positive" if self.point_labels[0] == 1 else "negative"
                x, y = self.points[0]
                parts.append(f"{kind} point at {x:g},{y:g}")
            else:
                parts.append(f"{len(self.points)} points")
        return " + ".join(parts)


@dataclass(frozen=True)
class Prompts:
    """All prompts for one image: points (P, 2), point_labels (P,), boxes (B, 4); float64 /
    int64 arrays. Build with :func:`make_prompts` (checks) or :func:`parse_prompts` (text)."""

    points: np.ndarray
    point_labels: np.ndarray
    boxes: np.ndarray

    def objects(self) -> list[PromptObject]:
        """One :class:`PromptObject` per mask to predict (the rule in the module docstring)."""
        if len(self.boxes) == 1:
            return [PromptObject(self.points, self.point_labels, self.boxes[0])]
        objects = [PromptObject(self.points[:0], self.point_labels[:0], b) for b in self.boxes]
        if len(self.points):
            objects.append(PromptObject(self.points, self.point_labels, None))
        return objects

    def __len__(self) -> int:
        return len(self.objects())


def make_prompts(
    points=None, point_labels=None, boxes=None, *, image_size: tuple[int, int] | None = None
) -> Prompts:
    """Check and pack prompts. ``points`` (P, 2) x, y; ``point_labels`` (P,) of 1 / 0
    (default: all positive); ``boxes`` (B, 4) x0, y0, x1, y1; ``image_size`` (H, W) to check
    the coordinates against.

    Raises :class:`PromptError` for: no prompt at all, wrong shapes, NaN / infinite / negative
    coordinates, points or boxes outside the image, boxes with x1 <= x0 or y1 <= y0, labels
    other than 0 / 1, a negative point alone, more than ``MAX_POINTS`` points or ``MAX_BOXES``
    boxes.
    """
    points_array = _array(points, 2, "points", "x,y")
    boxes_array = _array(boxes, 4, "boxes", "x0,y0,x1,y1")
    if point_labels is None:
        labels = np.ones(len(points_array), dtype=np.int64)
    else:
        labels = np.asarray(point_labels, dtype=np.float64).reshape(-1)
        if labels.shape != (len(points_array),):
            raise PromptError(
                f"{len(labels)} point labels for {len(points_array)} points: give one label "
                "(1 positive, 0 negative) per point"
            )
        if not np.isin(labels, (0, 1)).all():
            raise PromptError(
                f"point labels must be 1 (positive) or 0 (negative), got {labels.tolist()}"
            )
        labels = labels.astype(np.int64)
    if not len(points_array) and not len(boxes_array):
        raise PromptError("no prompt: give at least one point or box")
    if len(points_array) > MAX_POINTS or len(boxes_array) > MAX_BOXES:
        raise PromptError(
            f"too many prompts ({len(points_array)} points, {len(boxes_array)} boxes): at most "
            f"{MAX_POINTS} points and {MAX_BOXES} boxes per image; split them over several runs"
        )
    for name, array in (("point", points_array), ("box", boxes_array)):
        bad = ~np.isfinite(array).all(axis=1) if len(array) else np.zeros(0, bool)
        if bad.any():
            raise PromptError(f"{name} {_show(array[bad.argmax()])} has a NaN or infinite value")
        negative = (array < 0).any(axis=1) if len(array) else np.zeros(0, bool)
        if negative.any():
            raise PromptError(
                f"{name} {_show(array[negative.argmax()])} has a negative coordinate: "
                "coordinates are pixels from the image's top-left corner"
            )
    for box in boxes_array:
        if box[2] <= box[0] or box[3] <= box[1]:
            raise PromptError(
                f"box {_show(box)} is empty: write x0,y0,x1,y1 with x1 > x0 and y1 > y0"
            )
    if len(points_array) and not (labels == 1).any() and len(boxes_array) != 1:
        raise PromptError(
            "only negative points: add a positive point (label 1) or a box for the object"
        )
    if image_size is not None:
        height, width = image_size
        for point in points_array:
            if point[0] >= width or point[1] >= height:
                raise PromptError(
                    f"point {_show(point)} is outside the {width}x{height} image (x in "
                    f"0..{width - 1}, y in 0..{height - 1})"
                )
        for box in boxes_array:
            if box[2] > width or box[3] > height:
                raise PromptError(
                    f"box {_show(box)} reaches outside the {width}x{height} image (x in "
                    f"0..{width}, y in 0..{height})"
                )
    return Prompts(points_array, labels, boxes_array)


def network_points(points, scale_xy):
    """Pixel indices of the image -> coordinates in a network input scaled by ``scale_xy``
    (sx, sy), in segment-anything's form (which adds the last half pixel itself):
    ``(x + 0.5) * s - 0.5``, so the centre of a pixel lands on the centre of the same spot
    in the resized image. Plain ``x * s`` (SAM's ``apply_coords``) puts the last column's click
    on the resized image's edge at s = 0.5 and outside it below. ``points`` (..., 2) numpy
    array or tensor; returns the same type and shape."""
    return (points + 0.5) * scale_xy - 0.5


def parse_prompts(
    points: str | None = None,
    boxes: str | None = None,
    *,
    image_size: tuple[int, int] | None = None,
) -> Prompts:
    """Prompts from the command line's text: ``points`` "x,y[,1|0]; ..." (label 1 = positive,
    the default; 0 = negative) and ``boxes`` "x0,y0,x1,y1; ...". PromptError for text that
    does not parse, and everything :func:`make_prompts` refuses."""
    point_rows = _parse_rows(points, (2, 3), "--points", "x,y or x,y,1 (positive) / x,y,0")
    box_rows = _parse_rows(boxes, (4,), "--boxes", "x0,y0,x1,y1")
    labels = [row[2] if len(row) == 3 else 1.0 for row in point_rows]
    return make_prompts(
        [row[:2] for row in point_rows] or None,
        labels or None,
        box_rows or None,
        image_size=image_size,
    )


def _parse_rows(text: str | None, lengths: tuple[int, ...], option: str, form: str) -> list:
    if text is None or not text.strip():
        return []
    rows = []
    for item in text.split(";"):
        if not item.strip():
            continue
        try:
            row = [float(value) for value in item.split(",")]
        except ValueError:
            raise PromptError(f"{option}: '{item.strip()}' is not numbers: write {form}") from None
        if len(row) not in lengths:
            raise PromptError(
                f"{option}: '{item.strip()}' has {len(row)} numbers: write {form}, "
                "several separated by ';'"
            )
        rows.append(row)
    return rows


def _array(values, width: int, name: str, form: str) -> np.ndarray:
    if values is None:
        return np.zeros((0, width), dtype=np.float64)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be numbers, each {form}") from None
    if array.size == 0:
        return np.zeros((0, width), dtype=np.float64)
    if array.ndim == 1 and array.shape[0] == width:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise PromptError(
            f"{name} must have shape (N, {width}), each {form}; got {tuple(array.shape)}"
        )
    return array


def _show(values) -> str:
    return ",".join("nan" if math.isnan(v) else f"{v:g}" for v in values)
