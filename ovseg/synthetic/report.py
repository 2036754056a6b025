"""The synthetic world's evaluation and report: PQ and mIoU of base and novel classes for the
three classifier modes (and the ensemble with the keep-novel panoptic rule), per-class
diagnostics (are masks proposed? does the frozen CLIP know the class?), a figure of val
predictions, and report.json / report.md."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ovseg.data import PanopticDataset
    from ovseg.predictor import ImageFeatures, OVSegPredictor
    from ovseg.synthetic.config import WorldConfig

# (alpha, beta) of the geometric ensemble for each classifier mode.
MODES = {"in_vocab": (0.0, 0.0), "out_vocab": (1.0, 1.0), "ensemble": (0.4, 0.8)}
# The ensemble's classes through panoptic inference with ``inference.keep_novel`` (issue 34):
# panoptic only, its semantic output (mIoU) is the ensemble's.
KEEP_NOVEL = "ensemble_keep_novel"
FIGURE_ROWS = 6  # val scenes drawn in predictions.png


@dataclass
class SegmentTally:
    """Per class, one entry per ground-truth val segment: the best IoU of any query's mask,
    whether the in-vocabulary head names that best query right (masks found but named wrong,
    or not found at all?), and whether the frozen CLIP names the pooled TRUE mask right."""

    num_classes: int
    best_iou: list[list[float]] = field(init=False)
    in_vocab_on_best: list[list[bool]] = field(init=False)
    clip_on_true_mask: list[list[bool]] = field(init=False)

    def __post_init__(self) -> None:
        self.best_iou = [[] for _ in range(self.num_classes)]
        self.in_vocab_on_best = [[] for _ in range(self.num_classes)]
        self.clip_on_true_mask = [[] for _ in range(self.num_classes)]


def evaluate_world(
    model,
    model_cfg,
    val_set: PanopticDataset,
    novel: list[bool],
    cfg: WorldConfig,
    out: Path,
    *,
    progress: bool,
) -> dict:
    """PQ and mIoU (%, base = seen, novel = unseen) for the three classifier modes, and a
    chance baseline: a uniformly random class for every pixel. Draws out/predictions.png.

    ``novel``: per class index of ``val_set``'s vocabulary, held out of segmentation training.
    Returns {results: {mode: PQ, PQ_base, PQ_novel, mIoU, mIoU_base, mIoU_novel}, per_class:
    {name: diagnostics and IoU per mode}, chance: {mIoU, mIoU_base, mIoU_novel}, val_images}.
    The modes are scored with explicit ensemble weights: the model is left as it was.
    """
    from tqdm import tqdm

    from ovseg.evaluation import PanopticEvaluator, SemanticEvaluator
    from ovseg.predictor import OVSegPredictor

    predictor = OVSegPredictor(model, model_cfg, use_disk_text_cache=False)
    vocab = val_set.vocabulary
    predictor.set_vocabulary(vocab)
    seen = [not n for n in novel]
    categories = [
        {"id": i, "name": n, "isthing": t}
        for i, (n, t) in enumerate(zip(vocab.names, vocab.is_thing, strict=True))
    ]
    panoptic = {m: PanopticEvaluator(categories, seen=seen) for m in [*MODES, KEEP_NOVEL]}
    semantic = {m: SemanticEvaluator(len(vocab), class_names=vocab.names, seen=seen) for m in MODES}
    chance = SemanticEvaluator(len(vocab), class_names=vocab.names, seen=seen)
    rng = np.random.default_rng(12345)
    tally = SegmentTally(len(vocab))
    figure_rows = []
    for index in tqdm(
        range(len(val_set)), desc="evaluating", disable=not progress, file=sys.stderr
    ):
        sample = val_set[index]
        chance.update(rng.integers(0, len(vocab), sample["sem_seg"].shape), sample["sem_seg"])
        row = _evaluate_image(predictor, sample, cfg.test_short_side, panoptic, semantic, tally)
        if index < FIGURE_ROWS:
            figure_rows.append(row)
    per_class = _per_class_diagnostics(vocab.names, novel, tally, predictor.classifier.embeddings)
    results = _mode_results(panoptic, semantic, per_class)
    chance_miou = chance.compute()
    draw_figure(figure_rows, vocab, out / "predictions.png")
    return {
        "results": results,
        "per_class": per_class,
        "chance": {
            "mIoU": chance_miou["mIoU"],
            "mIoU_base": chance_miou["mIoU_seen"],
            "mIoU_novel": chance_miou["mIoU_unseen"],
        },
        "val_images": len(val_set),
    }


def _mode_results(panoptic: dict, semantic: dict, per_class: dict) -> dict:
    """Per mode: PQ and mIoU (%), all / base / novel, from its evaluators, and the novel
    segments' recall in the panoptic output (%: matched at IoU > 0.5 / all novel segments,
    summed over the novel classes); adds each class's IoU_{mode} to its ``per_class`` row.
    The keep-novel mode has the ensemble's mIoU."""
    results = {}
    for mode in [*MODES, KEEP_NOVEL]:
        pq = panoptic[mode].compute()
        miou = semantic[mode if mode in MODES else "ensemble"].compute()
        novel = [c for name, c in pq["per_class"].items() if per_class.get(name, {}).get("novel")]
        found, total = sum(c["tp"] for c in novel), sum(c["tp"] + c["fn"] for c in novel)
        results[mode] = {
            "PQ": pq["All"]["pq"],
            "PQ_base": pq["Seen"]["pq"],
            "PQ_novel": pq["Unseen"]["pq"],
            "mIoU": miou["mIoU"],
            "mIoU_base": miou["mIoU_seen"],
            "mIoU_novel": miou["mIoU_unseen"],
            "novel_recall": 100.0 * found / total if total else float("nan"),
        }
        if mode in MODES:
            for name, iou in miou["per_class_iou"].items():
                if name in per_class:
                    per_class[name][f"IoU_{mode}"] = iou
    return results


def _evaluate_image(
    predictor: OVSegPredictor,
    sample: dict,
    short_side: int,
    panoptic: dict,
    semantic: dict,
    tally: SegmentTally,
) -> dict:
    """One val image through the three modes: updates the ``panoptic`` / ``semantic``
    evaluators of each mode and the ``tally`` of its segments. Returns its figure row: image,
    truth and each mode's (H, W) class labels."""
    from ovseg.predictor_base import segment_outputs

    row = {"image": sample["image"], "truth": sample["sem_seg"]}
    features = predictor.encode(sample["image"], short_side=short_side)  # once for every mode
    for mode, (alpha, beta) in MODES.items():
        result = predictor.segment(features, tasks=("panoptic", "semantic"), alpha=alpha, beta=beta)
        if mode == "in_vocab":  # (alpha, beta) = (0, 0): the in-vocabulary head alone
            in_vocab_labels = result["class_logits"][:, :-1].argmax(1).numpy()
        labels = result["sem_seg"].argmax(0).numpy()
        semantic[mode].update(labels, sample["sem_seg"])
        panoptic[mode].update(
            sample["panoptic"],
            sample["segments_info"],
            result["panoptic_seg"].numpy(),
            [{"id": s["id"], "category_id": s["category_id"]} for s in result["segments_info"]],
        )
        row[mode] = labels
        if mode == "ensemble":  # the same classes, panoptic with the keep-novel rule
            kept = segment_outputs(
                features,
                result["class_logits"],
                predictor.vocabulary,
                dataclasses.replace(predictor.inference, keep_novel=True),
                result["output_size"],
                ("panoptic",),
                seen=torch.tensor(predictor.seen),
            )
            panoptic[KEEP_NOVEL].update(
                sample["panoptic"],
                sample["segments_info"],
                kept["panoptic_seg"].numpy(),
                [{"id": s["id"], "category_id": s["category_id"]} for s in kept["segments_info"]],
            )
    segments = sample["segments_info"]
    if segments:
        truth = np.stack([sample["panoptic"] == s["id"] for s in segments])
        ious, best_query, clip_labels = segment_diagnostics(predictor, features, truth)
        for segment, iou, query, label in zip(segments, ious, best_query, clip_labels, strict=True):
            category = segment["category_id"]
            tally.best_iou[category].append(float(iou))
            tally.in_vocab_on_best[category].append(bool(in_vocab_labels[query] == category))
            tally.clip_on_true_mask[category].append(bool(label == category))
    return row


def _per_class_diagnostics(
    names: list[str], novel: list[bool], tally: SegmentTally, class_embeddings: torch.Tensor
) -> dict:
    """Per class with val segments: novel, segments, proposal_recall_50, in_vocab_on_best_mask,
    clip_on_true_mask (%), and the class whose text embedding ((K, D) ``class_embeddings``)
    is nearest, with its cosine."""
    # How far each class's text embedding is from its nearest other class: both heads
    # classify against these, so two classes whose words embed alike cannot be told apart.
    unit = torch.nn.functional.normalize(class_embeddings.float().cpu(), dim=-1)
    cosine = (unit @ unit.T).fill_diagonal_(-2.0)
    nearest_cos, nearest = cosine.max(1)
    return {
        name: {
            "novel": bool(is_novel),
            "segments": len(tally.best_iou[c]),
            "proposal_recall_50": 100 * float(np.mean(np.array(tally.best_iou[c]) >= 0.5)),
            "in_vocab_on_best_mask": 100 * float(np.mean(tally.in_vocab_on_best[c])),
            "clip_on_true_mask": 100 * float(np.mean(tally.clip_on_true_mask[c])),
            "text_nearest": names[int(nearest[c])],
            "text_nearest_cos": float(nearest_cos[c]),
        }
        for c, (name, is_novel) in enumerate(zip(names, novel, strict=True))
        if tally.best_iou[c]
    }


@torch.no_grad()
def segment_diagnostics(
    predictor: OVSegPredictor, features: ImageFeatures, gt_masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Why novel classes are (not) found, per ground-truth segment of one image.

    Args:
        predictor: with the vocabulary set (one text embedding per class).
        features: the image's :meth:`OVSegPredictor.encode` features.
        gt_masks: (S, H, W) bool, the true segments at the image size.
    Returns:
        best_iou (S,) float: the best IoU of any query's mask (are masks proposed?);
        best_query (S,) int: that query's index; clip_labels (S,) int: the class the frozen
        CLIP gives the segment when its TRUE mask is pooled the FC-CLIP way (is the CLIP good
        enough?).
    """
    import torch.nn.functional as F

    from ovseg.modeling.postprocess import resize_to_original

    # The queries' masks as the predictor post-processes them: logits up to the padded input,
    # cropped to the resized image and resized to the original.
    queries = F.interpolate(features.pred_masks, size=features.padded_hw, mode="bilinear")[0]
    queries = resize_to_original(queries, features.resized_hw, gt_masks.shape[-2:])
    proposed = (queries > 0).flatten(1).float().cpu()
    truth = torch.from_numpy(gt_masks).flatten(1).float()
    intersection = truth @ proposed.T
    union = truth.sum(1, keepdim=True) + proposed.sum(1) - intersection
    best_iou, best_query = (intersection / union.clamp(min=1)).max(1)
    embeds = predictor.pool_masks(features, gt_masks)
    clip_labels = (embeds @ predictor.classifier.embeddings.T).argmax(1).cpu().numpy()
    return best_iou.numpy(), best_query.numpy(), clip_labels


def draw_figure(rows: list[dict], vocab, path: Path) -> None:
    """Val scenes: image | ground truth | in-vocab | out-of-vocab | ensemble (class colours).
    ``rows``: dicts of image (H, W, 3) uint8, truth and each mode's (H, W) class labels (255:
    void); ``vocab``: the Vocabulary, for the legend; written as a PNG to ``path``."""
    from PIL import Image, ImageDraw

    from ovseg.visualize import palette

    colours = np.concatenate([palette(len(vocab)), np.zeros((256 - len(vocab), 3), np.uint8)])
    tiles = []
    for row in rows:
        cells = [row["image"]] + [
            colours[np.asarray(row[k]).clip(0, 255)] for k in ("truth", *MODES)
        ]
        tiles.append(np.concatenate(cells, axis=1))
    sheet = Image.fromarray(np.concatenate(tiles, axis=0)) if tiles else Image.new("RGB", (1, 1))
    header = Image.new("RGB", (sheet.width, 16), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    width = sheet.width // 5
    for i, title in enumerate(("image", "truth (black: void)", *MODES)):
        draw.text((i * width + 4, 2), title, fill=(0, 0, 0))
    legend = Image.new("RGB", (sheet.width, 16 * ((len(vocab) + 4) // 5)), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for i, name in enumerate(vocab.names):
        x, y = (i % 5) * width + 4, (i // 5) * 16 + 2
        draw.rectangle([x, y, x + 10, y + 10], fill=tuple(int(c) for c in colours[i]))
        draw.text((x + 14, y), name, fill=(0, 0, 0))
    full = Image.new("RGB", (sheet.width, header.height + sheet.height + legend.height))
    full.paste(header, (0, 0))
    full.paste(sheet, (0, header.height))
    full.paste(legend, (0, header.height + sheet.height))
    full.save(path)


def write_report(out: Path, report: dict) -> None:
    """out/report.json (the whole report) and out/report.md (markdown tables of the results,
    the CLIP's zero-shot accuracy and the per-class diagnostics, the timings and the figure)."""
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    lines = [
        "# Synthetic open-vocabulary world",
        "",
        f"Novel classes (never labelled in segmentation training): "
        f"{', '.join(report['novel_classes'])}",
        "",
        "| classifier | PQ | PQ base | PQ novel | mIoU | mIoU base | mIoU novel | novel recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in report["results"].items():
        recall = r.get("novel_recall", float("nan"))  # reports written before it lack it
        lines.append(
            f"| {mode} | {r['PQ']:.1f} | {r['PQ_base']:.1f} | {r['PQ_novel']:.1f} | "
            f"{r['mIoU']:.1f} | {r['mIoU_base']:.1f} | {r['mIoU_novel']:.1f} | {recall:.1f} |"
        )
    c = report["chance"]
    lines.append(
        f"| chance (random pixels) | | | | {c['mIoU']:.1f} | {c['mIoU_base']:.1f} | "
        f"{c['mIoU_novel']:.1f} | |"
    )
    lines += [
        "",
        f"{KEEP_NOVEL}: the ensemble's classes, panoptic inference with the keep-novel rule "
        "(`--keep-novel`; its mIoU is the ensemble's). Novel recall: novel segments matched "
        "in the panoptic output (IoU > 0.5) / all novel segments.",
    ]
    z = report["zero_shot"]
    lines += [
        "",
        f"CLIP zero-shot accuracy on {z['crops']} val object/texture crops: "
        f"{z['all']:.1f}% (base {z['base']:.1f}%, novel {z['novel']:.1f}%); on the box "
        f"regions of val scenes at the test scale (mean of the dense map over the box, as "
        f"mask pooling does): {z['regions_all']:.1f}% (base {z['regions_base']:.1f}%, novel "
        f"{z['regions_novel']:.1f}%); chance {z['chance']:.1f}%.",
        "",
        "Per class (val): recall of proposals (any query's mask at IoU >= 0.5 with the true "
        "segment), the in-vocabulary head's class for the query whose mask matches best, the "
        "frozen CLIP's class for the true mask pooled the FC-CLIP way, its "
        "zero-shot accuracy on crops and on box regions of the dense map, and IoU per "
        "classifier (%); last, the class whose text embedding is nearest (cosine): both heads "
        "classify against these embeddings.",
        "",
        "| class | proposals | in_vocab on best mask | CLIP on true mask | CLIP crops "
        "| CLIP regions | IoU in_vocab | IoU out_vocab | IoU ensemble | nearest text |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["per_class"].items():
        cells = [
            c.get(k, float("nan"))
            for k in (
                "proposal_recall_50",
                "in_vocab_on_best_mask",
                "clip_on_true_mask",
                "zero_shot_crops",
                "zero_shot_regions",
                "IoU_in_vocab",
                "IoU_out_vocab",
                "IoU_ensemble",
            )
        ]
        label = f"{name} (novel)" if c["novel"] else name
        nearest = f"{c['text_nearest']} ({c['text_nearest_cos']:.2f})"
        lines.append(f"| {label} | " + " | ".join(f"{v:.0f}" for v in cells) + f" | {nearest} |")
    lines += [
        "",
        "Times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items()),
        "",
        "![predictions](predictions.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
