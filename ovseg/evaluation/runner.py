"""Evaluate a predictor on a dataset: PQ (panoptic sets), mIoU, box and mask AP (things).

Used by ``ovseg eval``. Images run one at a time through the model (padding a batch would
change the results, as in the official evaluation); loading and decoding run in background
workers. Under torchrun each process takes every world_size-th image and the evaluators are
combined (sums all-reduced, instances gathered on rank 0), so N processes give the report of
one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ovseg.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_arrays,
    broadcast_object,
    global_position,
    shard,
)
from ovseg.evaluation.instance import InstanceEvaluator
from ovseg.evaluation.panoptic import (
    PanopticEvaluator,
    write_panoptic_json,
    write_panoptic_pngs,
)
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
    dist_info: DistInfo | None = None,
    on_report=None,
) -> dict:
    """Run ``predictor`` over ``dataset`` with the dataset's vocabulary and score it.

    Panoptic datasets support all three tasks; semantic datasets only "semantic".
    ``head="pixel-text"`` scores the training-free pixel-text semantic output (semantic only).
    ``dist_info`` (:func:`ovseg.distributed.init_distributed`, under torchrun): this process
    scores its shard, and every process returns the combined report (rank 0 writes the files).
    ``on_report(report)`` is called on rank 0 once the scores are known, before any file is
    written (a front end prints them there: a failing write cannot lose them).
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
    info = dist_info or DistInfo()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, shard(count, info)),
        batch_size=1,
        num_workers=num_workers,
        collate_fn=_identity,
    )
    saved = []
    start = time.perf_counter()
    mine = len(shard(count, info))
    for sample in tqdm(
        loader,
        total=mine,
        desc="evaluating" if not info.enabled else f"evaluating (rank 0 of {info.world_size})",
        unit="image",
        disable=not progress or not info.is_main,
        file=sys.stderr,
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
    annotations = []
    if output_dir is not None and save_predictions and saved:
        # Each process writes its own PNGs; the JSON lists them in dataset order.
        annotations = write_panoptic_pngs(output_dir, PREDICTIONS_JSON, saved, dataset.categories)
    _combine(evaluators, info)
    report = None
    if info.is_main:
        report = {name: evaluator.compute() for name, evaluator in evaluators.items()}
        report["images"] = count
        report["seconds"] = time.perf_counter() - start
        choice = getattr(predictor, "precision", None)
        if choice is not None and hasattr(choice, "as_record"):
            report["precision"] = choice.as_record()
    report = broadcast_object(report, info)  # also waits for every process to finish
    gathered = all_gather_objects(annotations, info)
    if on_report is not None and info.is_main:
        on_report(report)
    if output_dir is not None and info.is_main:
        output_dir = Path(output_dir)
        write_text_atomic(output_dir / "results.json", json.dumps(report, indent=1, default=float))
        if save_predictions and any(gathered):
            ordered = sorted(
                (global_position(rank, index, info), annotation)
                for rank, part in enumerate(gathered)
                for index, annotation in enumerate(part)
            )
            write_panoptic_json(
                output_dir, PREDICTIONS_JSON, [a for _, a in ordered], dataset.categories
            )
    return report


PREDICTIONS_JSON = "panoptic_predictions.json"


def _combine(evaluators: dict, info: DistInfo) -> None:
    """Every process's evaluators summed into each (panoptic and semantic counts) or gathered
    on rank 0 in dataset order (instances, for COCOeval)."""
    if not info.enabled:
        return
    if "panoptic" in evaluators:
        panoptic = evaluators["panoptic"]
        count = np.array([panoptic.num_images], dtype=np.int64)
        all_reduce_arrays([panoptic.iou_sum, panoptic.tp, panoptic.fp, panoptic.fn, count], info)
        panoptic.num_images = int(count[0])
    if "semantic" in evaluators:
        all_reduce_arrays([evaluators["semantic"].confusion], info)
    if "instance" in evaluators:
        states = all_gather_objects(evaluators["instance"].state(), info)
        if info.is_main:
            evaluators["instance"].merge_shards(states)


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
