"""Per-stage latency and peak memory of FC-CLIP inference (logic of tools/benchmark.py).

Runs with random weights unless --weights is given: speed and memory do not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EXAMPLE = Path(__file__).resolve().parent.parent / "demo" / "examples" / "coffee.jpg"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class StageClock:
    """``with clock("stage"): ...`` records the stage's wall time (device synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        _sync(self.device)
        start = time.perf_counter()
        yield
        _sync(self.device)
        self.times[stage] = time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="fcclip_convnext_large_coco")
    parser.add_argument("--weights", default=None, help="weights file (default: random weights)")
    parser.add_argument("--image", default=str(EXAMPLE))
    parser.add_argument("--short-side", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", default="coco", help="vocabulary classified against")
    parser.add_argument(
        "--switch-vocab",
        default="ade150",
        help="second vocabulary for the vocabulary-switch timing",
    )
    parser.add_argument("--task", default="panoptic", choices=("panoptic", "semantic", "instance"))
    parser.add_argument(
        "--text",
        action="store_true",
        help="also time building the --switch-vocab text classifier from scratch "
        "and from the disk cache",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    return parser


def run(args) -> dict:
    from ovseg.checkpoint import load_weights
    from ovseg.config import load_config
    from ovseg.modeling.fcclip import build_model
    from ovseg.modeling.transformer_decoder import mask_pooling
    from ovseg.predictor import OVSegPredictor, as_vocabulary
    from ovseg.preprocess import load_image, normalize_and_pad, resize_image, shortest_edge_size

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config)
    model = build_model(cfg)
    if args.weights:
        load_weights(model, args.weights)
    text_cache = tempfile.mkdtemp(prefix="ovseg-bench-text-")
    predictor = OVSegPredictor(
        model, cfg, device=args.device, dtype=DTYPES[args.dtype], text_cache_dir=text_cache
    )
    device = predictor.device
    report = {
        "config": cfg.name,
        "weights": args.weights or "random",
        "device": str(device),
        "threads": args.threads,
        "dtype": args.dtype,
        "short_side": args.short_side,
        "task": args.task,
        "vocab": args.vocab,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    report["model_loaded_peak_rss_mib"] = peak_rss_mib()

    vocab, switch_vocab = as_vocabulary(args.vocab), as_vocabulary(args.switch_vocab)
    if args.text:
        start = time.perf_counter()
        predictor.set_vocabulary(switch_vocab)
        report["text_classifier_build_s"] = time.perf_counter() - start
        report["text_classifier_prompts"] = len(switch_vocab.synonyms) * len(
            predictor.text_encoder.templates
        )
        predictor.text_encoder._memory.clear()
        predictor.vocabulary = None
        start = time.perf_counter()
        predictor.set_vocabulary(switch_vocab)
        report["text_classifier_from_disk_cache_s"] = time.perf_counter() - start
    predictor.set_vocabulary(switch_vocab)  # text cached before any timing below
    predictor.set_vocabulary(vocab)

    image = load_image(args.image)
    inf = cfg.inference
    resized_hw = shortest_edge_size(*image.shape[:2], args.short_side, inf.max_size_test)
    report["image_size"], report["resized_size"] = list(image.shape[:2]), list(resized_hw)
    autocast = torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=args.dtype != "fp32")
    stages = {
        "preprocess": [],
        "backbone": [],
        "pixel_decoder": [],
        "transformer_decoder": [],
        "ensemble_postprocess": [],
        "total": [],
        "vocabulary_switch": [],
    }
    for repeat in range(args.repeats + 1):  # the first run warms up and is not counted
        clock = StageClock(device)
        with torch.no_grad():
            with clock("preprocess"):
                pixels = normalize_and_pad(
                    [resize_image(image, resized_hw)],
                    inf.pixel_mean,
                    inf.pixel_std,
                    inf.size_divisibility,
                    device=device,
                )
            with autocast:
                with clock("backbone"):
                    features = model.backbone(pixels)
                with clock("pixel_decoder"):
                    mask_features, multi_scale = model.pixel_decoder(features)
                with clock("transformer_decoder"):
                    outputs = model.transformer_decoder(
                        multi_scale, mask_features, aux_classes=False
                    )
                    pooled = mask_pooling(features["clip_vis_dense"], outputs["pred_masks"])
                    clip_embeds = model.backbone.project_pooled(pooled)
            cached = {
                "pred_embeds": outputs["pred_embeds"].float(),
                "clip_embeds": clip_embeds.float(),
                "pred_masks": outputs["pred_masks"].float(),
                "padded_hw": tuple(pixels.shape[-2:]),
            }
            predictor.set_vocabulary(vocab)
            with clock("ensemble_postprocess"):
                predictor.postprocess(cached, image.shape[:2], resized_hw, (args.task,))
            clock.times["total"] = sum(clock.times.values())
            # A vocabulary switch on a cached image: classification + post-processing only.
            with clock("vocabulary_switch"):
                predictor.set_vocabulary(switch_vocab)
                predictor.postprocess(cached, image.shape[:2], resized_hw, (args.task,))
        if repeat > 0:
            for key, value in clock.times.items():
                stages[key].append(value)
    report["seconds_median"] = {k: statistics.median(v) for k, v in stages.items()}
    report["seconds_all"] = stages
    report["peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        report["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    report["vocabulary_switch_fraction_of_total"] = (
        report["seconds_median"]["vocabulary_switch"] / report["seconds_median"]["total"]
    )
    return report


def format_table(report: dict) -> str:
    lines = [
        f"{report['config']} ({report['weights']} weights) on {report['device']}, "
        f"{report['threads']} threads, {report['dtype']}, image {report['image_size']} -> "
        f"{report['resized_size']}, task {report['task']}, vocab {report['vocab']}",
        f"{'stage':<24}{'median s':>10}",
    ]
    for stage, seconds in report["seconds_median"].items():
        lines.append(f"{stage:<24}{seconds:>10.3f}")
    lines.append(f"{'switch / total':<24}{report['vocabulary_switch_fraction_of_total']:>10.1%}")
    lines.append(f"{'peak RSS (MiB)':<24}{report['peak_rss_mib']:>10.0f}")
    if "text_classifier_build_s" in report:
        lines.append(
            f"{'text build (s)':<24}{report['text_classifier_build_s']:>10.2f}"
            f"  ({report['text_classifier_prompts']} prompts)"
        )
        lines.append(
            f"{'text from cache (s)':<24}{report['text_classifier_from_disk_cache_s']:>10.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    print(format_table(report))
    if args.json:
        from ovseg.checkpoint import atomic_write

        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
