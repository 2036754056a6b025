"""``ovseg bench`` (and ``tools/benchmark.py``): per-stage latency and peak memory of FC-CLIP
inference.

Runs with random weights unless --weights is given: speed and memory do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ovseg.assets import EXAMPLES_DIR

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class StageClock:
    """Times the model's stages inside one ``predictor.encode`` call with forward hooks.

    Marks are taken when the backbone, the pixel decoder and the transformer decoder start and
    the backbone and pixel decoder end (the device synchronised); ``stages(start, end)`` turns
    them into preprocess / backbone / pixel_decoder / transformer_decoder (with the mask-pooled
    CLIP embeddings, up to the end of ``encode``) wall times in seconds.
    """

    def __init__(self, model, device: torch.device) -> None:
        self.device = device
        self.marks: dict[str, float] = {}
        self.handles = []
        for name in ("backbone", "pixel_decoder", "transformer_decoder"):
            module = getattr(model, name)
            self.handles.append(module.register_forward_pre_hook(self._mark(f"{name}_start")))
            self.handles.append(module.register_forward_hook(self._mark(f"{name}_end")))

    def _mark(self, key: str):
        def hook(*_):
            _sync(self.device)
            self.marks[key] = time.perf_counter()

        return hook

    def stages(self, start: float, end: float) -> dict[str, float]:
        m = self.marks
        return {
            "preprocess": m["backbone_start"] - start,
            "backbone": m["backbone_end"] - m["backbone_start"],
            "pixel_decoder": m["pixel_decoder_end"] - m["pixel_decoder_start"],
            "transformer_decoder": end - m["transformer_decoder_start"],
        }

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--config", default="fcclip_convnext_large_coco")
    parser.add_argument("--weights", default=None, help="weights file (default: random weights)")
    parser.add_argument("--image", default=str(EXAMPLES_DIR / "coffee.jpg"))
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


def _time_text_classifier(predictor, vocabulary, report: dict) -> None:
    """Build the text classifier from scratch, then from the disk cache alone."""
    start = time.perf_counter()
    predictor.text_encoder(vocabulary)
    report["text_classifier_build_s"] = time.perf_counter() - start
    report["text_classifier_prompts"] = len(vocabulary.synonyms) * len(
        predictor.text_encoder.templates
    )
    predictor.text_encoder.clear_memory()
    start = time.perf_counter()
    predictor.text_encoder(vocabulary)
    report["text_classifier_from_disk_cache_s"] = time.perf_counter() - start


def _time_stages(predictor, image, args, vocab, switch_vocab) -> dict[str, float]:
    """One timed run of the public steps: encode (by stage), segment, vocabulary switch."""
    clock = StageClock(predictor.model, predictor.device)
    predictor.clear_cache()
    predictor.set_vocabulary(vocab)
    try:
        _sync(predictor.device)
        start = time.perf_counter()
        features = predictor.encode(image, short_side=args.short_side)
        _sync(predictor.device)
        times = clock.stages(start, time.perf_counter())
    finally:
        clock.remove()
    start = time.perf_counter()
    predictor.segment(features, tasks=args.task)
    _sync(predictor.device)
    times["ensemble_postprocess"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    # A vocabulary switch on a cached image: classification + post-processing only.
    start = time.perf_counter()
    predictor.segment(features, vocabulary=switch_vocab, tasks=args.task)
    _sync(predictor.device)
    times["vocabulary_switch"] = time.perf_counter() - start
    return times


def run(args) -> dict:
    from ovseg.checkpoint import load_weights
    from ovseg.config import load_config
    from ovseg.modeling.fcclip import build_model
    from ovseg.predictor import OVSegPredictor
    from ovseg.preprocess import load_image
    from ovseg.vocabulary import as_vocabulary

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
    image = load_image(args.image)
    report = {
        "config": cfg.name,
        "weights": args.weights or "random",
        "device": str(predictor.device),
        "threads": args.threads,
        "dtype": args.dtype,
        "short_side": args.short_side,
        "task": args.task,
        "vocab": args.vocab,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "image_size": list(image.shape[:2]),
        "resized_size": list(predictor.network_input_size(*image.shape[:2], args.short_side)),
        "model_loaded_peak_rss_mib": peak_rss_mib(),
    }
    vocab, switch_vocab = as_vocabulary(args.vocab), as_vocabulary(args.switch_vocab)
    if args.text:
        _time_text_classifier(predictor, switch_vocab, report)
    predictor.set_vocabulary(switch_vocab)  # text cached before any timing below
    runs = [
        _time_stages(predictor, image, args, vocab, switch_vocab) for _ in range(args.repeats + 1)
    ][1:]  # the first run warms up and is not counted
    stages = {key: [times[key] for times in runs] for key in runs[0]}
    report["seconds_median"] = {k: statistics.median(v) for k, v in stages.items()}
    report["seconds_all"] = stages
    report["peak_rss_mib"] = peak_rss_mib()
    if predictor.device.type == "cuda":
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


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    report = run(args)
    print(format_table(report))
    if args.json:
        from ovseg.fileio import atomic_write

        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    return 0
