"""Evaluate a predictor on a dataset: PQ (panoptic sets), mIoU, box and mask AP (things).

Used by ``ovseg eval``. Images run one at a time through the model (padding a batch would
change the results, as in the official evaluation); loading and decoding run in background
workers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ovseg.evaluation.instance import InstanceEvaluator
from ovseg.evaluation.panoptic import PanopticEvaluator, write_coco_panoptic
from ovseg.evaluation.semantic import SemanticEvaluator
from ovseg.fileio import write_text_atomic


def _identity(batch):
    return batch[0]


def _evaluators(vocab, seen: list[bool], tasks: tuple[str, ...]) -> dict:
    categories = [
        {"id": i, "name": n, "isthing": t}
        for i, (n, t) in enumerate(zip(vocab.names, vocab.is_thing, strict=True))
    ]
    evaluators = {}
    if "panoptic" in tasks:
        evaluators["panoptic"] = PanopticEvaluator(categories, seen=seen)
    if "semantic" in tasks:
        evaluators["semantic"] = SemanticEvaluator(len(vocab), class_names=vocab.names, seen=seen)
    if "instance" in tasks:
        evaluators["instance"] = InstanceEvaluator(categories)
    return evaluators


def _add_instances(evaluator: InstanceEvaluator, sample: dict, instances: dict) -> None:
    """Ground-truth thing segments and predicted instances of one image."""
    infos = [s for s in sample["segments_info"] if s["isthing"]]
    gt_masks = [sample["panoptic"] == s["id"] for s in infos]
    # A thing listed in segments_info but drawn nowhere has no mask to match (PQ counts it).
    infos = [s for s, mask in zip(infos, gt_masks, strict=True) if mask.any()]
    gt_masks = (
        np.stack([mask for mask in gt_masks if mask.any()])
        if infos
        else np.zeros((0,) + sample["panoptic"].shape, dtype=bool)
    )
    evaluator.add_ground_truth(
        sample["image_id"],
        gt_masks,
        np.array([s["category_id"] for s in infos]),
        np.array([bool(s["iscrowd"]) for s in infos]),
    )
    evaluator.add_prediction(
        sample["image_id"],
        instances["masks"].cpu().numpy(),
        instances["scores"].cpu().numpy(),
        instances["labels"].cpu().numpy(),
        instances["boxes"].cpu().numpy(),
    )


def _score_image(evaluators: dict, sample: dict, result: dict) -> dict | None:
    """Update every evaluator with one image; returns its panoptic prediction record (or
    None without the panoptic task)."""
    saved = None
    if "panoptic" in evaluators:
        pred = result["panoptic_seg"].cpu().numpy()
        segments = [
            {"id": s["id"], "category_id": s["category_id"]} for s in result["segments_info"]
        ]
        evaluators["panoptic"].update(sample["panoptic"], sample["segments_info"], pred, segments)
        saved = {
            "image_id": sample["image_id"],
            "file_name": sample["file_name"],
            "panoptic": pred,
            "segments": segments,
        }
    if "semantic" in evaluators:
        evaluators["semantic"].update(result["sem_seg"].argmax(0).cpu().numpy(), sample["sem_seg"])
    if "instance" in evaluators:
        _add_instances(evaluators["instance"], sample, result["instances"])
    return saved


def evaluate(
    predictor,
    dataset,
    *,
    tasks=("panoptic", "semantic", "instance"),
    output_dir: str | Path | None = None,
    save_predictions: bool = False,
    limit: int | None = None,
    num_workers: int = 2,
    progress: bool = True,
    head: str = "fcclip",
) -> dict:
    """Run ``predictor`` over ``dataset`` with the dataset's vocabulary and score it.

    Panoptic datasets support all three tasks; semantic datasets only "semantic".
    ``head="pixel-text"`` scores the training-free pixel-text semantic output (semantic only).
    Returns {"panoptic": ..., "semantic": ..., "instance": ..., "images": n, "seconds": s}.
    Raises ValueError for an image above the predictor's ``max_output_pixels``.
    """
    from tqdm import tqdm

    vocab = dataset.vocabulary
    predictor.set_vocabulary(vocab)
    predictor.feature_cache_size = 0  # every image is new
    has_panoptic = hasattr(dataset, "categories")
    tasks = tuple(t for t in tasks if has_panoptic or t == "semantic")
    if head == "pixel-text":
        tasks = tuple(t for t in tasks if t == "semantic")
    evaluators = _evaluators(vocab, predictor.seen, tasks)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, range(count)),
        batch_size=1,
        num_workers=num_workers,
        collate_fn=_identity,
    )
    saved = []
    start = time.perf_counter()
    for sample in tqdm(
        loader, total=count, desc="evaluating", unit="image", disable=not progress, file=sys.stderr
    ):
        # head only when asked for: any object with predict(image, tasks=...) can be scored
        extra = {} if head == "fcclip" else {"head": head}
        result = predictor.predict(sample["image"], tasks=tasks, **extra)
        if result["output_size"] != result["image_size"]:
            raise ValueError(
                f"image {sample['file_name']} is larger than max_output_pixels: "
                "raise it to evaluate at full resolution"
            )
        record = _score_image(evaluators, sample, result)
        if save_predictions and record is not None:
            saved.append(record)
    report = {name: evaluator.compute() for name, evaluator in evaluators.items()}
    report["images"] = count
    report["seconds"] = time.perf_counter() - start
    if output_dir is not None:
        output_dir = Path(output_dir)
        write_text_atomic(output_dir / "results.json", json.dumps(report, indent=1, default=float))
        if save_predictions and saved:
            write_coco_panoptic(output_dir, "panoptic_predictions.json", saved, dataset.categories)
    return report


def format_report(report: dict) -> str:
    parts = []
    for name, evaluator in (
        ("panoptic", PanopticEvaluator),
        ("semantic", SemanticEvaluator),
        ("instance", InstanceEvaluator),
    ):
        if name in report:
            parts.append(f"== {name} ==\n{evaluator.format_table(report[name])}")
    parts.append(f"{report['images']} images in {report['seconds']:.1f} s")
    return "\n".join(parts)
