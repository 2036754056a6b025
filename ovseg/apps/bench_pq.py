"""Time PanopticEvaluator (update + compute) on seeded random panoptic gt / prediction pairs.

Each image has ~20 gt segments (things and stuff, COCO-sized random ids), a void region and
a crowd segment; the prediction is a jittered copy with some wrong classes, missing segments
and spurious ones. Generation is not timed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ovseg.evaluation import PanopticEvaluator

NUM_CLASSES = 40
NUM_THINGS = 25


def _voronoi(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """(H, W) map of labels 1..count: nearest of ``count`` random seeds, built at 1/8 size."""
    small_h, small_w = -(-height // 8), -(-width // 8)
    seeds = rng.uniform(0, 1, size=(count, 2)) * (small_h, small_w)
    ys, xs = np.mgrid[0:small_h, 0:small_w]
    distance = (ys[None] - seeds[:, 0, None, None]) ** 2 + (xs[None] - seeds[:, 1, None, None]) ** 2
    small = distance.argmin(axis=0) + 1
    return np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)[:height, :width]


def make_pair(rng: np.random.Generator, height: int, width: int) -> tuple:
    """-> gt_map (H, W), gt_segments, pred_map (H, W), pred_segments."""
    count = int(rng.integers(16, 25))
    labels = _voronoi(rng, height, width, count)
    gt_ids = rng.choice(np.arange(1, 256**3), size=count + 1, replace=False)
    gt_ids[0] = 0
    gt_map = gt_ids[labels]
    gt_map[rng.random((height, width)) < 0.02] = 0  # scattered void pixels
    y, x = rng.integers(0, height - 60), rng.integers(0, width - 80)
    gt_map[y : y + 60, x : x + 80] = 0  # a void block
    categories = rng.integers(0, NUM_CLASSES, size=count)
    crowd = np.zeros(count, dtype=bool)
    crowd[rng.integers(0, count)] = True
    gt_segments = [
        {"id": int(gt_ids[i + 1]), "category_id": int(categories[i]), "iscrowd": int(crowd[i])}
        for i in range(count)
    ]

    pred_labels = np.roll(labels, (int(rng.integers(-12, 13)), int(rng.integers(-12, 13))), (0, 1))
    dropped = rng.random(count) < 0.1
    pred_labels[dropped[pred_labels - 1]] = 0
    spurious = count + 1
    y, x = rng.integers(0, height - 50), rng.integers(0, width - 50)
    pred_labels[y : y + 50, x : x + 50] = spurious
    pred_categories = np.where(
        rng.random(count) < 0.8, categories, rng.integers(0, NUM_CLASSES, size=count)
    )
    present = np.unique(pred_labels)
    pred_segments = [
        {"id": int(label), "category_id": int(pred_categories[label - 1])}
        for label in present
        if 0 < label <= count
    ]
    pred_segments.append({"id": spurious, "category_id": int(rng.integers(0, NUM_CLASSES))})
    return gt_map, gt_segments, pred_labels, pred_segments


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="number of image pairs")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    pairs = [make_pair(rng, args.height, args.width) for _ in range(args.images)]
    categories = [
        {"id": i, "name": f"class{i}", "isthing": i < NUM_THINGS} for i in range(NUM_CLASSES)
    ]
    evaluator = PanopticEvaluator(categories, seen=[i % 4 != 0 for i in range(NUM_CLASSES)])
    start = time.perf_counter()
    for pair in pairs:
        evaluator.update(*pair)
    results = evaluator.compute()
    seconds = time.perf_counter() - start
    print(evaluator.format_table(results))
    print(
        f"{args.images} images of {args.width}x{args.height}: update + compute {seconds:.2f} s "
        f"({1000 * seconds / args.images:.1f} ms / image)"
    )
    return 0
