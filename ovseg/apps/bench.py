"""``ovseg bench`` (and ``tools/benchmark.py``): per-stage latency and peak memory of FC-CLIP
inference, per precision, with the hardware detected, the backbone's achieved GFLOP/s against
the machine's measured peak, and the fast path's agreement with fp32.

Runs with random weights unless --weights is given: speed and memory do not depend on them
(except post-processing, which resizes only the masks a task reads: with --task all the
semantic output reads every query, as the official COCO panoptic config computes all three).
Agreement needs trained weights: it compares the fast path with fp32 on the shipped
synthetic_tiny model (its val scenes) and on the official tiny parity fixture when the
checkout has it (tests/data/parity_tiny).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ovseg.assets import EXAMPLES_DIR

TASK_CHOICES = {
    "all": ("semantic", "panoptic", "instance"),
    "panoptic": ("panoptic",),
    "semantic": ("semantic",),
    "instance": ("instance",),
}


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
    from ovseg.apps.arguments import precision_list

    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--config", default="fcclip_convnext_large_coco")
    parser.add_argument("--weights", default=None, help="weights file (default: random weights)")
    parser.add_argument(
        "--image",
        default=None,
        help="photo to time (default: the shipped coffee.jpg; with --official its "
        "data/scene640x480.jpg)",
    )
    parser.add_argument("--short-side", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--precisions",
        type=precision_list,
        default="fp32,auto",
        help="comma-separated precisions to time, each against the first (default: fp32,auto)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--vocab",
        default=None,
        help="vocabulary classified against (default: coco; with --official its data/vocab8.tsv)",
    )
    parser.add_argument(
        "--switch-vocab",
        default="ade150",
        help="second vocabulary for the vocabulary-switch timing",
    )
    parser.add_argument("--task", default="all", choices=sorted(TASK_CHOICES))
    parser.add_argument(
        "--text",
        nargs="?",
        const="ade150",
        default=None,
        metavar="VOCABS",
        help="also time building these vocabularies' text classifiers (comma-separated; "
        "default ade150) from scratch, from the disk cache, and per prompt the official way "
        "(open_clip's encode_text over the full 77-token context)",
    )
    parser.add_argument(
        "--no-agreement", action="store_true", help="skip the fast path's agreement check"
    )
    parser.add_argument("--no-peak", action="store_true", help="skip the matmul peak probe")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also export the fp32 model to ONNX (checked against PyTorch) and time it in ONNX "
        "Runtime with the same threads: the image network, then ovseg's post-processing",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    official = parser.add_argument_group(
        "side by side with the official FC-CLIP (ovseg.apps.bench_official)"
    )
    official.add_argument(
        "--official",
        metavar="DIR",
        default=None,
        help="the official code's CPU harness (built by shared/reference/official_fcclip/"
        "rebuild.sh): time it and ovseg in turn, fresh processes, A B A B, and print the "
        "ratio table (--precisions, --repeats, --threads, --short-side apply to both)",
    )
    official.add_argument(
        "--rounds", type=int, default=2, help="A B rounds (default 2; 0 with --compare only)"
    )
    official.add_argument(
        "--compare",
        action="store_true",
        help="also compare the outputs at full size: the official run saves its random "
        "weights as an official checkpoint and ovseg's exact path loads it (1.5 GB written "
        "to a temporary folder)",
    )
    official.add_argument(
        "--memory",
        action="store_true",
        help="also each side's peak RSS in one fresh process at --memory-short-side",
    )
    official.add_argument("--memory-short-side", type=int, default=800)
    return parser


def _time_text_classifier(predictor, vocabulary) -> dict:
    """Build a vocabulary's text classifier from scratch, then from the disk cache alone; and
    the official per-prompt cost on a sample of its prompts (open_clip's encode_text over the
    whole context, as the official code encodes every run)."""
    report = {}
    start = time.perf_counter()
    predictor.text_encoder(vocabulary)
    report["build_s"] = time.perf_counter() - start
    prompts = [t.format(s) for s in vocabulary.synonyms for t in predictor.text_encoder.templates]
    report["prompts"] = len(prompts)
    predictor.text_encoder.clear_memory()
    start = time.perf_counter()
    predictor.text_encoder(vocabulary)
    report["from_disk_cache_s"] = time.perf_counter() - start
    sample = prompts[:: max(1, len(prompts) // 256)][:256]
    backbone = predictor.model.backbone
    tokens = backbone.tokenize(sample)
    with torch.no_grad():
        start = time.perf_counter()
        for batch in tokens.split(128):
            backbone.clip.encode_text(batch.to(predictor.device))
        _sync(predictor.device)
    report["official_per_prompt_s"] = (time.perf_counter() - start) / len(sample)
    report["ovseg_per_prompt_s"] = report["build_s"] / len(prompts)
    return report


def _time_stages(predictor, image, args, vocab, switch_vocab) -> dict[str, float]:
    """One timed run of the public steps: encode (by stage), segment, vocabulary switch."""
    tasks = TASK_CHOICES[args.task]
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
    predictor.segment(features, tasks=tasks)
    _sync(predictor.device)
    times["ensemble_postprocess"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    times["image_network"] = times["total"] - times["ensemble_postprocess"]
    # A vocabulary switch on a cached image: classification + post-processing only.
    start = time.perf_counter()
    predictor.segment(features, vocabulary=switch_vocab, tasks=tasks)
    _sync(predictor.device)
    times["vocabulary_switch"] = time.perf_counter() - start
    return times


def _time_onnx(onnx_predictor, image, args, texts: list) -> dict[str, float]:
    """One timed run of an :class:`ovseg.export.OnnxPredictor`: the image graph (with the
    pre-processing; no per-stage split), segment, vocabulary switch. ``texts``: the two
    (vocabulary, its synonyms' embeddings from PyTorch) (the text tower is not timed here)."""
    (vocab, vocab_text), (switch_vocab, switch_text) = texts
    tasks = TASK_CHOICES[args.task]
    onnx_predictor.clear_cache()
    onnx_predictor.set_vocabulary(vocab, text_embeddings=vocab_text)
    nan = float("nan")
    times = dict.fromkeys(("preprocess", "backbone", "pixel_decoder", "transformer_decoder"), nan)
    start = time.perf_counter()
    features = onnx_predictor.encode(image, short_side=args.short_side)
    times["image_network"] = time.perf_counter() - start
    start = time.perf_counter()
    onnx_predictor.segment(features, tasks=tasks)
    times["ensemble_postprocess"] = time.perf_counter() - start
    times["total"] = times["image_network"] + times["ensemble_postprocess"]
    start = time.perf_counter()
    onnx_predictor.set_vocabulary(switch_vocab, text_embeddings=switch_text)
    onnx_predictor.segment(features, tasks=tasks)
    times["vocabulary_switch"] = time.perf_counter() - start
    return times


def _onnx_run(args, cfg, text_cache: str, image, vocab, switch_vocab, report: dict) -> dict:
    """Export the fp32 model to a temporary folder and time it in ONNX Runtime."""
    from ovseg.export import OnnxPredictor, export_onnx

    predictor = build_bench_predictor(args, cfg, "fp32", text_cache)
    texts = [(v, predictor.text_encoder(v).embeddings.numpy()) for v in (vocab, switch_vocab)]
    with tempfile.TemporaryDirectory(prefix="ovseg-bench-onnx-") as folder:
        start = time.perf_counter()
        settings = export_onnx(predictor, Path(folder) / "export", text_encoder=False)
        report["onnx_export_s"] = time.perf_counter() - start
        report["onnx_check"] = settings["check"]
        del predictor
        gc.collect()
        onnx_predictor = OnnxPredictor(Path(folder) / "export", threads=args.threads)
        loaded_rss = peak_rss_mib()
        runs = [_time_onnx(onnx_predictor, image, args, texts) for _ in range(args.repeats + 1)]
    runs = runs[1:]  # the first run warms up and is not counted
    stages = {key: [times[key] for times in runs] for key in runs[0]}
    import onnxruntime

    return {
        "precision": {"precision": "fp32", "reason": f"ONNX Runtime {onnxruntime.__version__}"},
        "seconds_median": {k: statistics.median(v) for k, v in stages.items()},
        "seconds_all": stages,
        "model_loaded_peak_rss_mib": loaded_rss,
        "peak_rss_mib": peak_rss_mib(),
    }


def build_bench_predictor(args, cfg, precision: str, text_cache: str):
    from ovseg.checkpoint import load_weights
    from ovseg.modeling.fcclip import build_model
    from ovseg.predictor import OVSegPredictor

    torch.manual_seed(0)
    model = build_model(cfg)
    if args.weights:
        load_weights(model, args.weights)
    return OVSegPredictor(
        model, cfg, device=args.device, precision=precision, text_cache_dir=text_cache
    )


STAGE_MODULES = {
    "backbone": "CLIPBackbone",
    "pixel_decoder": "PixelDecoder",
    "transformer_decoder": "TransformerDecoder",
}


def _attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    """Attention's two matrix products, (B, h, Q, d) x (B, h, S, d) and the weights times
    (B, h, S, d_v): 2 FLOP per multiply-add, as torch counts the GPU attention kernels."""
    batch, heads, queries, dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (dim + value_dim)


def _accumulating_matmul_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs):
    """``addmm_`` (in place, uncounted by torch): (m, k) x (k, n), 2 FLOP per multiply-add."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def count_flops():
    """A ``FlopCounterMode`` that also counts the CPU attention kernel (torch registers
    formulas only for the GPU ones, so the decoder's attention counted as 0 FLOP on a CPU:
    8.7 of its 40.7 GFLOP at 640 x 864) and in-place ``addmm_``."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: _attention_flop,
            aten.addmm_: _accumulating_matmul_flop,  # mask pooling's bands
        },
    )


def _stage_gflop(predictor, height: int, width: int) -> dict[str, float]:
    """Floating-point operations (GFLOP, 2 per multiply-add: matrix products, convolutions
    and attention's products) of one image forward's stages; the transformer decoder's
    include the mask pooling after it, as its timing does."""
    pixels = torch.zeros(1, 3, height, width, device=predictor.device)
    with torch.no_grad(), count_flops() as counter:
        predictor.model.encode_image(pixels, aux_classes=False, aux_outputs=False)
    counts = {name: sum(ops.values()) / 1e9 for name, ops in counter.get_flop_counts().items()}
    stages = {stage: counts.get(module, 0.0) for stage, module in STAGE_MODULES.items()}
    stages["transformer_decoder"] = counts["Global"] - stages["backbone"] - stages["pixel_decoder"]
    return stages


def stage_precision(record: dict, stage: str) -> str:
    """The precision a stage's main work runs in, from a run's precision record: under bf16
    / fp16 autocast the pixel decoder stays fp32; on the int8 path the backbone's and the
    pixel decoder's main layers are int8 and the transformer decoder runs in the other
    layers' precision (``others``: bf16 where native and faster, else fp32)."""
    precision = record["precision"]
    if precision in ("bf16", "fp16") and stage == "pixel_decoder":
        return "fp32"
    if precision == "int8" and stage == "transformer_decoder":
        return record.get("others") or "fp32"
    return precision


def stage_rates(report: dict) -> dict[str, dict[str, dict[str, float]]]:
    """Per run and stage: achieved GFLOP/s and, where the matmul peak of the stage's
    precision (:func:`stage_precision`) was measured, the fraction of it."""
    peaks = {peak["precision"]: peak["gflops"] for peak in report.get("matmul_peak", [])}
    rates = {}
    for label, run in report["runs"].items():
        rates[label] = {}
        for stage, gflop in report.get("stage_gflop", {}).items():
            seconds = run["seconds_median"].get(stage, float("nan"))
            rate = gflop / seconds if seconds > 0 else float("nan")
            entry = {"gflops": rate, "precision": stage_precision(run["precision"], stage)}
            if entry["precision"] in peaks:
                entry["fraction_of_peak"] = rate / peaks[entry["precision"]]
            rates[label][stage] = entry
    return rates


def run(args) -> dict:
    from ovseg.config import load_config
    from ovseg.precision import detect_hardware
    from ovseg.preprocess import load_image, padded_size, shortest_edge_size
    from ovseg.vocabulary import as_vocabulary

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    text_cache = tempfile.mkdtemp(prefix="ovseg-bench-text-")
    image = load_image(args.image)
    hardware = detect_hardware(args.device)
    report = {
        "config": cfg.name,
        "weights": args.weights or "random",
        "device": args.device,
        "hardware": hardware.describe(),
        "threads": args.threads,
        "short_side": args.short_side,
        "task": args.task,
        "vocab": args.vocab,
        "torch": torch.__version__,
        "image_size": list(image.shape[:2]),
        "resized_size": list(
            shortest_edge_size(*image.shape[:2], args.short_side, cfg.inference.max_size_test)
        ),
        "runs": {},
    }
    vocab, switch_vocab = as_vocabulary(args.vocab), as_vocabulary(args.switch_vocab)
    for requested in args.precisions:
        predictor = build_bench_predictor(args, cfg, requested, text_cache)
        loaded_rss = peak_rss_mib()
        choice = predictor.precision
        label = requested if requested == choice.precision else f"{requested}={choice.precision}"
        if args.text and "text" not in report:
            report["text"] = {
                name: _time_text_classifier(predictor, as_vocabulary(name))
                for name in args.text.split(",")
            }
        if choice.precision == "fp32" and "stage_gflop" not in report:
            padded = padded_size(*report["resized_size"], cfg.inference.size_divisibility)
            report["stage_gflop"] = _stage_gflop(predictor, *padded)
            report["backbone_gflop"] = report["stage_gflop"]["backbone"]
        predictor.set_vocabulary(switch_vocab)  # text cached before any timing below
        runs = [
            _time_stages(predictor, image, args, vocab, switch_vocab)
            for _ in range(args.repeats + 1)
        ][1:]  # the first run warms up and is not counted
        stages = {key: [times[key] for times in runs] for key in runs[0]}
        report["runs"][label] = {
            "precision": choice.as_record(),
            "seconds_median": {k: statistics.median(v) for k, v in stages.items()},
            "seconds_all": stages,
            # Process peaks: after building this model, and after its runs (Linux ru_maxrss).
            "model_loaded_peak_rss_mib": loaded_rss,
            "peak_rss_mib": peak_rss_mib(),
        }
        del predictor
        gc.collect()
    if args.onnx:
        if args.device != "cpu":
            raise ValueError("--onnx times ONNX Runtime on the CPU: use --device cpu")
        report["runs"]["onnx"] = _onnx_run(
            args, cfg, text_cache, image, vocab, switch_vocab, report
        )
    report["peak_rss_mib"] = peak_rss_mib()
    if args.device.startswith("cuda"):
        report["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    fast = {run["precision"]["precision"] for run in report["runs"].values()} - {"fp32"}
    # (the onnx run is fp32: it adds no fast path to probe or check)
    if not args.no_peak:
        from ovseg.apps.bench_matmul import peak_matmul_gflops

        in_use = {
            stage_precision(run["precision"], stage)
            for run in report["runs"].values()
            for stage in STAGE_MODULES
        }
        report["matmul_peak"] = [
            peak_matmul_gflops(p, device=args.device) for p in ["fp32", *sorted(in_use - {"fp32"})]
        ]
    fp32_run = report["runs"].get("fp32")
    if fp32_run and "backbone_gflop" in report:
        rate = report["backbone_gflop"] / fp32_run["seconds_median"]["backbone"]
        report["backbone_gflops_fp32"] = rate
        if report.get("matmul_peak"):
            report["backbone_fraction_of_peak"] = rate / report["matmul_peak"][0]["gflops"]
    report["stage_rates"] = stage_rates(report)
    if not args.no_agreement:
        from ovseg.apps.bench_agreement import fast_path_agreement

        report["agreement"] = [fast_path_agreement(p, device=args.device) for p in sorted(fast)]
    return report


def format_table(report: dict) -> str:
    labels = list(report["runs"])
    medians = [report["runs"][label]["seconds_median"] for label in labels]
    lines = [
        f"{report['hardware']}, torch {report['torch']}, {report['threads']} threads",
        f"{report['config']} ({report['weights']} weights), image {report['image_size']} -> "
        f"{report['resized_size']}, task {report['task']}, vocab {report['vocab']}",
        f"{'stage (median s)':<24}" + "".join(f"{label:>14}" for label in labels),
    ]
    stages = list(dict.fromkeys(stage for m in medians for stage in m))
    for stage in stages:
        values = [m.get(stage, float("nan")) for m in medians]
        row = f"{stage:<24}" + "".join(
            f"{'-':>14}" if math.isnan(v) else f"{v:>14.3f}" for v in values
        )
        if len(labels) > 1 and values[0] > 0:  # NaN compares False
            ratios = ", ".join(
                "-" if math.isnan(v) else f"{v / values[0]:.2f}x" for v in values[1:]
            )
            row += f"   ({ratios} of {labels[0]})"
        lines.append(row)
    for label in labels:
        choice = report["runs"][label]["precision"]
        lines.append(f"{label}: {choice['reason']}")
    if "backbone_gflops_fp32" in report:
        line = (
            f"backbone: {report['backbone_gflop']:.0f} GFLOP, "
            f"{report['backbone_gflops_fp32']:.0f} GFLOP/s in fp32"
        )
        if "backbone_fraction_of_peak" in report:
            line += f" = {report['backbone_fraction_of_peak']:.0%} of the measured matmul peak"
        lines.append(line)
    if "onnx_export_s" in report:
        worst = max(v for k, v in report["onnx_check"].items() if k != "image_size")
        lines.append(
            f"onnx: exported and checked in {report['onnx_export_s']:.0f} s, largest "
            f"difference from PyTorch {worst:.1e}; image_network = pre-processing + the graph"
        )
    for peak in report.get("matmul_peak", []):
        lines.append(f"matmul peak {peak['precision']:<5}{peak['gflops']:>8.0f} GFLOP/s")
    if report.get("stage_gflop"):
        gflop = ", ".join(f"{k} {v:.0f}" for k, v in report["stage_gflop"].items())
        lines.append(f"GFLOP per stage (matrix products and convolutions): {gflop}")
        for label, stages in report.get("stage_rates", {}).items():
            parts = [
                f"{stage} {entry['gflops']:.0f}"
                + (
                    f" ({entry['fraction_of_peak']:.0%} of {entry['precision']})"
                    if "fraction_of_peak" in entry
                    else ""
                )
                for stage, entry in stages.items()
            ]
            lines.append(f"GFLOP/s {label} (of the stage's precision's peak): " + ", ".join(parts))
    for agreement in report.get("agreement", []):
        lines.append(format_agreement(agreement))
    for label in labels:
        run = report["runs"][label]
        lines.append(
            f"peak RSS {label}: {run['model_loaded_peak_rss_mib']:.0f} MiB with the model "
            f"loaded, {run['peak_rss_mib']:.0f} MiB after its runs (process peaks so far)"
        )
    for name, text in report.get("text", {}).items():
        lines.append(
            f"text {name}: {text['build_s']:.1f} s cold for {text['prompts']} prompts "
            f"({text['ovseg_per_prompt_s'] * 1e3:.1f} ms a prompt; the official full-context "
            f"encode {text['official_per_prompt_s'] * 1e3:.1f} ms a prompt, ratio "
            f"{text['ovseg_per_prompt_s'] / text['official_per_prompt_s']:.2f}); from the disk "
            f"cache {text['from_disk_cache_s']:.3f} s"
        )
    return "\n".join(lines)


def format_agreement(agreement: dict) -> str:
    parts = [
        f"{case['name']}: semantic argmax {case['semantic_agreement']:.2%}, panoptic segments "
        f"{case['segments_fast']} vs {case['segments_fp32']}"
        for case in agreement["cases"]
    ]
    return f"{agreement['precision']} vs fp32: " + "; ".join(parts)


def _official_defaults(args) -> None:
    """--official: the harness's own photo and 8-class vocabulary unless given; checks the
    options that have no meaning there."""
    from ovseg.apps.bench_official import check_harness

    data = check_harness(args.official) / "data"
    args.image = str(Path(args.image or data / "scene640x480.jpg").resolve())
    args.vocab = args.vocab or str(data / "vocab8.tsv")
    if Path(args.vocab).is_file():
        args.vocab = str(Path(args.vocab).resolve())
    else:
        raise ValueError(
            f"--official needs --vocab as a file both sides read ({args.vocab} is not one): "
            "one class per line, KIND<TAB>synonyms"
        )
    if args.device != "cpu":
        raise ValueError("--official runs on the CPU (the harness is CPU-only): drop --device")
    if args.rounds < 0 or args.repeats < 1 or (args.rounds == 0 and not args.compare):
        raise ValueError("--repeats must be at least 1 and --rounds too (0 only with --compare)")


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    from ovseg.checkpoint import WeightsError
    from ovseg.preprocess import ImageError

    args = build_parser(prog).parse_args(argv)
    try:
        if args.official:
            from ovseg.apps.bench_official import format_side_by_side, side_by_side

            _official_defaults(args)
            report = side_by_side(args)
            table = format_side_by_side(report)
        else:
            args.image = args.image or str(EXAMPLES_DIR / "coffee.jpg")
            args.vocab = args.vocab or "coco"
            report = run(args)
            table = format_table(report)
    except (ValueError, FileNotFoundError, ImageError, WeightsError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table)
    if args.json:
        from ovseg.fileio import atomic_write

        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    return 0
