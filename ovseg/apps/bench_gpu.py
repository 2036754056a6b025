"""``ovseg bench-gpu`` (and ``tools/bench_gpu.py``): images per second of the whole image pass
(encode and three-task post-processing) per short side, precision, batch size and
``torch.compile`` on or off, with peak memory and each fast precision's agreement with fp32:
the speed issue's GPU table, in one run on the machine it is on.

    ovseg bench-gpu --device cuda --short-sides 800,1024 --precisions fp32,bf16,fp16,auto \\
        --batch-sizes 1,max --compile off,on --json gpu.json

Random ConvNeXt-L weights unless ``--weights`` (speed does not depend on them). Each batch is
distinct copies of one photo (one pixel differs, so the feature cache never answers), encoded
together by :meth:`ovseg.predictor.OVSegPredictor.encode_many`. ``max`` doubles the batch
from 1 until the device runs out of memory (at most ``--max-batch``). Peak memory: the
device's allocator peak on a GPU, the process's peak RSS on a CPU. Agreement (semantic argmax,
panoptic segment counts) needs trained weights: it runs on the shipped ``synthetic_tiny`` and
the official tiny parity model, as ``ovseg bench`` does. Runs on a CPU too (slowly), so it can
be checked before a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ANCHOR = "official FC-CLIP: 0.37 s an image on a V100 (ADE20K log), 0.38 s on an A100 (Mapillary)"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="fcclip_convnext_large_coco")
    parser.add_argument("--weights", default=None, help="weights file (default: random)")
    parser.add_argument("--image", default=None, help="photo (default: the shipped coffee.jpg)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--short-sides", default="800,1024")
    parser.add_argument("--precisions", default="fp32,bf16,fp16,auto")
    parser.add_argument(
        "--batch-sizes", default="1,max", help="comma-separated; max: the largest that fits"
    )
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--compile", default="off,on", help="torch.compile: off, on or both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--no-agreement", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    return parser


def _parse(args) -> dict:
    """The option lists, checked: ValueError naming the bad one."""
    from ovseg.precision import check_precision

    try:
        sides = [int(v) for v in args.short_sides.split(",")]
    except ValueError:
        raise ValueError("--short-sides takes integers, comma-separated") from None
    batches = []
    for value in args.batch_sizes.split(","):
        if value != "max" and not (value.isdigit() and int(value) >= 1):
            raise ValueError("--batch-sizes takes integers >= 1 and 'max', comma-separated")
        batches.append(value if value == "max" else int(value))
    modes = args.compile.split(",")
    if any(mode not in ("off", "on") for mode in modes):
        raise ValueError("--compile takes off, on or off,on")
    if min(sides) < 32 or args.repeats < 1 or args.max_batch < 1:
        raise ValueError("--short-sides >= 32, --repeats >= 1 and --max-batch >= 1, please")
    precisions = [check_precision(p) for p in args.precisions.split(",")]
    return {"sides": sides, "batches": batches, "modes": modes, "precisions": precisions}


def _images(image: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` copies of ``image``, each with its own first pixel (distinct cache keys)."""
    copies = []
    for index in range(count):
        copy = image.copy()
        copy[0, 0] = (index % 256, (index // 256) % 256, 0)
        copies.append(copy)
    return copies


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    from ovseg.apps.bench import peak_rss_mib

    return peak_rss_mib()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def time_batch(predictor, image, short_side: int, batch: int, repeats: int) -> dict:
    """Seconds of encode_many + segment (three tasks) on ``batch`` distinct copies, the median
    of ``repeats`` after one warm-up; images/s and the peak memory of those runs."""
    device = predictor.device
    images = _images(image, batch)
    runs = []
    _reset_peak(device)
    for _ in range(repeats + 1):
        predictor.clear_cache()
        _sync(device)
        start = time.perf_counter()
        features = predictor.encode_many(images, short_side=short_side, batch_size=batch)
        for one in features:
            predictor.segment(one)
        _sync(device)
        runs.append(time.perf_counter() - start)
    seconds = statistics.median(runs[1:])
    return {
        "batch": batch,
        "seconds": seconds,
        "images_per_s": batch / seconds,
        "seconds_per_image": seconds / batch,
        "peak_mib": _peak_mib(device),
    }


def run(args, options: dict) -> dict:
    """Every row of the table; ``options``: :func:`_parse`'s lists."""
    from ovseg.apps.bench import build_bench_predictor
    from ovseg.assets import EXAMPLES_DIR
    from ovseg.config import load_config
    from ovseg.precision import detect_hardware
    from ovseg.preprocess import load_image

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    image = load_image(args.image or EXAMPLES_DIR / "coffee.jpg")
    device = torch.device(args.device)
    report = {
        "config": cfg.name,
        "weights": args.weights or "random",
        "hardware": detect_hardware(args.device).describe(),
        "torch": torch.__version__,
        "image_size": list(image.shape[:2]),
        "anchor": ANCHOR,
        "rows": [],
    }
    text_cache = tempfile.mkdtemp(prefix="ovseg-bench-gpu-text-")
    for requested in options["precisions"]:
        for mode in options["modes"]:
            predictor = build_bench_predictor(args, cfg, requested, text_cache)
            predictor.set_vocabulary("coco")
            compile_s = None
            if mode == "on":
                predictor.model.encode_image = torch.compile(predictor.model.encode_image)
            for side in options["sides"]:
                if mode == "on":  # the first call compiles (per input shape)
                    start = time.perf_counter()
                    predictor.clear_cache()
                    predictor.segment(predictor.encode(image, short_side=side))
                    _sync(device)
                    compile_s = time.perf_counter() - start
                for batch in _batch_sizes(predictor, image, side, options, args):
                    row = {
                        "precision": predictor.precision.precision,
                        "requested": requested,
                        "compile": mode,
                        "compile_s": compile_s,
                        "short_side": side,
                        **batch,
                    }
                    report["rows"].append(row)
                    print(_format_row(row), flush=True)
            del predictor
            _reset_peak(device)
    if not args.no_agreement:
        from ovseg.apps.bench_agreement import fast_path_agreement

        fast = sorted({r["precision"] for r in report["rows"]} - {"fp32"})
        report["agreement"] = [fast_path_agreement(p, device=args.device) for p in fast]
    return report


def _batch_sizes(predictor, image, side: int, options: dict, args):
    """Each asked batch size's timing; ``max`` doubles until out of memory or --max-batch."""
    done: dict[int, dict] = {}
    for wanted in options["batches"]:
        if wanted != "max":
            done[wanted] = done.get(wanted) or time_batch(
                predictor, image, side, wanted, args.repeats
            )
            yield done[wanted]
            continue
        batch, best = 1, None
        while batch <= args.max_batch:
            try:
                best = done.get(batch) or time_batch(predictor, image, side, batch, args.repeats)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
                if not _out_of_memory(error):
                    raise
                _reset_peak(predictor.device)
                break
            done[batch] = best
            batch *= 2
        if best is not None:
            yield {**best, "largest": True, "max_batch": args.max_batch}


def _format_row(row: dict) -> str:
    compiled = f"compile on ({row['compile_s']:.0f} s first call)" if row["compile"] == "on" else ""
    largest = (
        f" (max: the largest that fitted, up to {row['max_batch']})" if row.get("largest") else ""
    )
    return (
        f"short side {row['short_side']}, {row['requested']}={row['precision']}, batch "
        f"{row['batch']}{largest}: {row['images_per_s']:.2f} images/s "
        f"({row['seconds_per_image']:.3f} s an image), peak {row['peak_mib']:.0f} MiB {compiled}"
    ).rstrip()


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    from ovseg.checkpoint import WeightsError
    from ovseg.preprocess import ImageError

    args = build_parser(prog).parse_args(argv)
    try:  # the image, config and weights are read before any timing; nothing is written
        report = run(args, _parse(args))
    except (ValueError, FileNotFoundError, ImageError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(ANCHOR)
    if report.get("agreement"):
        from ovseg.apps.bench import format_agreement

        for agreement in report["agreement"]:
            print(format_agreement(agreement))
    if args.json:
        from ovseg.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=1))
    return 0
