"""``ovseg bench-prompts`` (and ``tools/bench_prompts.py``): how good and how fast prompted
masks are, on the synthetic world's validation scenes.

For every thing of every scene: the mask IoU from one positive point at its centre (the
interior point farthest from its edge), from one at a random interior point, and from its box,
for base things and novel things (classes never labelled in training), and the top-1 label
accuracy of the centre-point mask over the full vocabulary. Masks from the model's prompt head,
or from SAM (``--sam-model``). With ``--teacher-sam``: the mask IoU between the head and the
teacher for the same prompts (distillation). Cost: milliseconds per prompt on cached image
features, and the automatic-mask labelling time of a tiny random SAM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--model", default="synthetic_tiny", help="zoo model (default: %(default)s)"
    )
    parser.add_argument("--weights", help="weights file (a model with a prompt head)")
    parser.add_argument("--config", help="config preset or YAML to go with --weights")
    parser.add_argument("--scenes", type=int, default=100, help="validation scenes (default: 100)")
    parser.add_argument("--sam-model", help="score SAM's masks instead of the prompt head's")
    parser.add_argument("--sam-weights", help="SAM checkpoint for --sam-model")
    parser.add_argument("--teacher-sam", help="also report head-vs-teacher mask IoU")
    parser.add_argument("--teacher-weights", help="the teacher SAM's checkpoint")
    parser.add_argument("--no-cost", action="store_true", help="skip the timings")
    parser.add_argument("--json", help="write the numbers here too")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        from ovseg.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=1))
    return 0


def val_scenes(root: Path, count: int):
    """The synthetic world's validation scenes (seed 0, 128x160) and its novel class ids."""
    from ovseg.data import PanopticDataset
    from ovseg.synthetic.config import WorldConfig
    from ovseg.synthetic.scenes import base_novel_split, write_synthetic_panoptic

    world = WorldConfig()
    json_path = write_synthetic_panoptic(
        root, count, split="val", size=world.size, seed=world.seed, patterns=world.patterns
    )
    dataset = PanopticDataset(json_path.parent / "images", json_path, json_path.parent / "panoptic")
    novel_ids = set(base_novel_split(world.novel_things, world.novel_stuff, seed=world.split_seed))
    return dataset, novel_ids


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def run(args) -> dict:
    import tempfile

    from ovseg.predictor import OVSegPredictor
    from ovseg.sam.labels import class_probabilities
    from ovseg.sam.prompts import make_prompts
    from ovseg.sam.training import centre_point, random_point
    from ovseg.synthetic.scenes import CATEGORIES

    predictor = OVSegPredictor.from_pretrained(args.model, weights=args.weights, config=args.config)
    sam = _sam(args.sam_model, args.sam_weights)
    teacher = _sam(args.teacher_sam, args.teacher_weights)
    if sam is None and predictor.model.prompt_head is None:
        raise ValueError(
            f"{predictor.model_name} has no prompt head: pass --sam-model or --weights"
        )
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset, novel_ids = val_scenes(Path(tmp), args.scenes)
        predictor.set_vocabulary(dataset.vocabulary)
        category_ids = [c.id for c in CATEGORIES]
        for index in range(len(dataset)):
            sample = dataset[index]
            image = sample["image"]
            features = predictor.encode(image)
            for mask, label in zip(sample["masks"], sample["labels"], strict=True):
                if not dataset.vocabulary.is_thing[label] or mask.sum() < 16:
                    continue
                ys, xs = np.nonzero(mask)
                prompts = {
                    "centre": make_prompts([centre_point(mask)]),
                    "random": make_prompts([random_point(mask, rng)]),
                    "box": make_prompts(
                        None, None, [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
                    ),
                }
                row = {"novel": category_ids[label] in novel_ids, "class": int(label)}
                for kind, prompt in prompts.items():
                    masks = (
                        sam.prompted(image, prompt).masks
                        if sam is not None
                        else predictor.prompt_head_masks(features, prompt).masks
                    )
                    row[kind] = _iou(masks[0], mask)
                    if kind == "centre":
                        probs = class_probabilities(
                            predictor.model,
                            predictor.pool_masks(features, masks),
                            predictor.classifier,
                            features.clip_dense,
                        )
                        row["top1"] = int(probs[0].argmax()) == int(label)
                    if teacher is not None:
                        row[f"teacher_{kind}"] = _iou(
                            masks[0], teacher.prompted(image, prompt).masks[0]
                        )
                rows.append(row)
    report = {"model": predictor.model_name, "masks": args.sam_model or "prompt head"}
    report["scenes"] = args.scenes
    for split in ("base", "novel"):
        picked = [r for r in rows if r["novel"] == (split == "novel")]
        report[split] = {
            "things": len(picked),
            **{
                key: float(np.mean([r[key] for r in picked])) if picked else None
                for key in ("centre", "random", "box", "top1")
                + (("teacher_centre", "teacher_random", "teacher_box") if teacher else ())
            },
        }
    if not args.no_cost:
        report["cost"] = cost(predictor, example_scene())
    return report


def example_scene() -> np.ndarray:
    """The shipped synthetic scene the timings run on."""
    from ovseg.assets import ASSETS_DIR
    from ovseg.preprocess import load_image

    return load_image(ASSETS_DIR / "examples" / "synthetic_val_00000.png")


def _sam(name, weights):
    if not name:
        return None
    from ovseg.sam.masks import SamMasks
    from ovseg.sam.zoo import load_sam

    return SamMasks(load_sam(name, weights=weights))


def _best_ms(run, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


@torch.no_grad()
def cost(predictor, image: np.ndarray) -> dict:
    """Milliseconds per prompt on cached features (the model's head with labelling; a head of
    the default, ConvNeXt-L config's size on a random embedding of an 800x1216 input, decoder
    and resize only), and SAM-tiny automatic masks + their labelling per image."""
    from ovseg.config import load_config
    from ovseg.modeling.fcclip import build_model
    from ovseg.modeling.prompt_head import build_prompt_head
    from ovseg.sam.masks import SamMasks
    from ovseg.sam.segment import segment_automatic
    from ovseg.sam.zoo import build_sam

    threads = torch.get_num_threads()
    result = {"threads": threads}
    features = predictor.encode(image)
    h, w = image.shape[:2]
    if predictor.model.prompt_head is not None:
        result["head_ms_per_prompt"] = _best_ms(
            lambda: predictor.segment_prompts(image, points=[[w / 2, h / 2]])
        )
    large = load_config("fcclip_convnext_large_coco")
    channels = build_model(large, device="meta").backbone.feature_channels
    head = build_prompt_head(channels, large.prompt_head).eval()
    embedding = torch.randn(1, large.prompt_head.embed_dim, 800 // 16, 1216 // 16)
    points = torch.tensor([[[600.0, 400.0]]])

    def large_prompt():
        logits, _ = head(
            embedding, input_hw=(800, 1216), points=points, point_labels=torch.ones(1, 1)
        )
        torch.nn.functional.interpolate(logits[:, :1], size=(800, 1216), mode="bilinear")

    result["convnext_large_head_ms_per_prompt"] = _best_ms(large_prompt, 10)
    torch.manual_seed(0)
    sam = SamMasks(build_sam("tiny"), pred_iou_thresh=0.0, stability_score_thresh=0.0)
    start = time.perf_counter()
    automatic = segment_automatic(predictor, image, sam, tasks=("panoptic",))
    result["sam_tiny_automatic_s"] = time.perf_counter() - start
    result["sam_tiny_automatic_masks"] = len(automatic["mask_set"].masks)
    masks = automatic["mask_set"].masks
    result["labelling_s_per_image"] = (
        _best_ms(lambda: predictor.pool_masks(features, masks), 5) / 1000
    )
    return result


def format_report(report: dict) -> str:
    lines = [
        f"prompted masks: {report['masks']} of {report['model']}, {report['scenes']} val scenes",
        "| things | count | IoU centre point | IoU random point | IoU box | top-1 label |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("base", "novel"):
        r = report[split]
        cells = [
            f"{r[k]:.3f}" if r[k] is not None else "-" for k in ("centre", "random", "box", "top1")
        ]
        lines.append(f"| {split} | {r['things']} | " + " | ".join(cells) + " |")
        if "teacher_centre" in r and r["teacher_centre"] is not None:
            lines.append(
                f"  {split} student-teacher IoU: centre {r['teacher_centre']:.3f}, random "
                f"{r['teacher_random']:.3f}, box {r['teacher_box']:.3f}"
            )
    if "cost" in report:
        lines.append("cost: " + json.dumps(report["cost"]))
    return "\n".join(lines)
