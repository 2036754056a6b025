"""``ovseg bench --official DIR``: ovseg timed side by side with the official FC-CLIP code.

DIR is the official code's CPU harness as ``shared/reference/official_fcclip/rebuild.sh``
makes it (``DIR/venv/bin/python``, ``DIR/run_ref.py``, ``DIR/data``). Each run is a fresh
process, official and ovseg in turn (A B A B), on the same image, vocabulary, short side,
thread count and random ConvNeXt-L weights; each reports its warm forward (the official
harness: the last of ``--repeats`` forwards; ovseg: the median of ``--repeats`` after a
warm-up). The table gives each stage's seconds (min-max over the rounds) and ovseg's ratio to
the official time, which is the only number comparable across machines. Peak memory
(``--memory``) is each whole process's VmHWM (``wait4``'s ``ru_maxrss``), one fresh process
per side and precision at the same short side.

Stages are cut the same way on both sides where the code allows: backbone, pixel decoder,
transformer decoder (ovseg's includes the mask-pooled CLIP embeddings, which the official code
computes after its decoder, in its last row) and the rest of the forward (normalisation and
padding, mask pooling on the official side, the ensemble and post-processing of all three
tasks). The official input is resized beforehand; ovseg's resize (a few ms) is in its total.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STAGES = ("backbone", "pixel_decoder", "transformer_decoder", "rest", "total")
STAGE_TITLES = {
    "backbone": "backbone",
    "pixel_decoder": "pixel decoder",
    "transformer_decoder": "transformer decoder (+ mask pooling)",
    "rest": "ensemble + post-processing",
    "total": "image forward",
}
_TIME_LINE = re.compile(
    r"\[time\] backbone (?P<backbone>[\d.]+)s \| text_classifier (?P<text>[\d.]+)s \| "
    r"pixel_decoder (?P<pixel_decoder>[\d.]+)s \| transformer_decoder "
    r"(?P<transformer_decoder>[\d.]+)s \| ensemble\+postprocess (?P<rest>[\d.]+)s \| "
    r"total (?P<total>[\d.]+)s"
)


class HarnessError(RuntimeError):
    """The official harness is missing or failed: the message says which and what to do."""


def check_harness(folder: str | Path) -> Path:
    """The harness folder, checked. Raises HarnessError naming what is missing."""
    folder = Path(folder)
    for part in ("venv/bin/python", "run_ref.py"):
        if not (folder / part).exists():
            raise HarnessError(
                f"{folder / part} is missing: build the official harness with "
                "shared/reference/official_fcclip/rebuild.sh (MIRRORS=... REF=DIR) first"
            )
    return folder


def _run_measured(command: list[str], *, threads: int) -> tuple[str, float]:
    """Run ``command`` as a fresh process; (its stdout, its peak RSS in MiB from wait4).
    Raises HarnessError with the end of its output when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    if process.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise HarnessError(f"{command[0]} exited {process.returncode}:\n{tail}")
    return text, usage.ru_maxrss / 1024


def run_official(folder: Path, args, *, short_side: int, repeats: int) -> dict:
    """One fresh official forward run: its stage seconds and peak RSS (MiB)."""
    with tempfile.TemporaryDirectory(prefix="ovseg-official-") as scratch:
        command = [
            str(folder / "venv/bin/python"),
            str(folder / "run_ref.py"),
            *("--image", args.image, "--vocab", args.vocab, "--seed", "0"),
            *("--scale-init", "100", "--token-std", "3"),
            *("--short-side", str(short_side), "--threads", str(args.threads)),
            *("--repeats", str(repeats), "--out", str(Path(scratch) / "out.npz")),
        ]
        text, peak = _run_measured(command, threads=args.threads)
    match = _TIME_LINE.search(text)
    if match is None:
        raise HarnessError(f"no [time] line in the official harness's output:\n{text[-500:]}")
    seconds = {stage: float(match[stage]) for stage in STAGES}
    return {"seconds": seconds, "peak_rss_mib": peak}


def run_ovseg(args, precision: str, *, short_side: int, repeats: int) -> dict:
    """One fresh ``ovseg bench`` process in one precision: stage seconds and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="ovseg-bench-") as scratch:
        report_path = Path(scratch) / "report.json"
        command = [
            sys.executable,
            *("-m", "ovseg", "bench", "--config", args.config),
            # the switch timing on the same vocabulary: no second text classifier to build,
            # which the official side has no counterpart of (time and memory)
            *("--image", args.image, "--vocab", args.vocab, "--switch-vocab", args.vocab),
            *("--short-side", str(short_side), "--threads", str(args.threads)),
            *("--precisions", precision, "--repeats", str(repeats), "--task", "all"),
            *("--no-agreement", "--no-peak", "--json", str(report_path)),
        ]
        if args.weights:
            command += ["--weights", args.weights]
        _, peak = _run_measured(command, threads=args.threads)
        report = json.loads(report_path.read_text())
    (run,) = report["runs"].values()
    median = run["seconds_median"]
    seconds = {
        "backbone": median["backbone"],
        "pixel_decoder": median["pixel_decoder"],
        "transformer_decoder": median["transformer_decoder"],
        "rest": median["preprocess"] + median["ensemble_postprocess"],
        "total": median["total"],
    }
    return {
        "seconds": seconds,
        "peak_rss_mib": peak,
        "precision": run["precision"]["precision"],
        "hardware": report["hardware"],
    }


def side_by_side(args) -> dict:
    """A B A B: ``args.rounds`` rounds of one official run and one ovseg run per precision."""
    folder = check_harness(args.official)
    precisions = list(args.precisions)
    report = {"official": [], "ovseg": {p: [] for p in precisions}, "threads": args.threads}
    report.update(image=args.image, vocab=args.vocab, short_side=args.short_side)
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}: official", file=sys.stderr, flush=True)
        report["official"].append(
            run_official(folder, args, short_side=args.short_side, repeats=args.repeats)
        )
        for precision in precisions:
            print(f"round {round_index + 1}/{args.rounds}: ovseg {precision}", file=sys.stderr)
            report["ovseg"][precision].append(
                run_ovseg(args, precision, short_side=args.short_side, repeats=args.repeats)
            )
    if args.compare:
        report["compare"] = compare_outputs(folder, args, short_side=args.short_side)
    if args.memory:
        side = args.memory_short_side
        report["memory_short_side"] = side
        report["memory"] = {"official": run_official(folder, args, short_side=side, repeats=1)}
        for precision in precisions:
            report["memory"][precision] = run_ovseg(args, precision, short_side=side, repeats=1)
    if report["official"]:
        report["hardware"] = next(iter(report["ovseg"].values()))[0]["hardware"]
    return report


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}"


def format_side_by_side(report: dict) -> str:
    """The ratio table: per stage the official seconds, then each ovseg precision's seconds
    and its ratio to the official time (min-max over rounds; ratios of medians)."""
    lines = []
    if "compare" in report:
        lines.append(format_differences(report["compare"], report["short_side"]))
    if not report["official"]:
        return "\n".join(lines)
    official = report["official"]
    labels = []
    for precision, runs in report["ovseg"].items():
        chosen = runs[0]["precision"]
        labels.append((precision if chosen == precision else f"{precision} (= {chosen})", runs))
    lines += [
        f"{report['hardware']}, {report['threads']} threads; {report['image']} at short side "
        f"{report['short_side']}, vocabulary {report['vocab']}; {len(official)} round(s) A B A B",
        "| stage (s) | official FC-CLIP | "
        + " | ".join(f"ovseg {label}" for label, _ in labels)
        + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for stage in STAGES:
        reference = [run["seconds"][stage] for run in official]
        cells = [_span(reference)]
        for _, runs in labels:
            values = [run["seconds"][stage] for run in runs]
            ratio = statistics.median(values) / statistics.median(reference)
            cells.append(f"{_span(values)} ({ratio:.2f}x)")
        lines.append(f"| {STAGE_TITLES[stage]} | " + " | ".join(cells) + " |")
    if "memory" in report:
        memory = report["memory"]
        reference = memory["official"]["peak_rss_mib"]
        parts = [f"official {reference:.0f} MiB"] + [
            f"ovseg {precision} {run['peak_rss_mib']:.0f} MiB "
            f"({run['peak_rss_mib'] / reference:.2f}x)"
            for precision, run in memory.items()
            if precision != "official"
        ]
        lines.append(
            f"peak RSS, one fresh process each at short side {report['memory_short_side']}: "
            + ", ".join(parts)
        )
    return "\n".join(lines)


def compare_outputs(folder: Path, args, *, short_side: int) -> dict:
    """The official code and ovseg's exact path (fp32) on the same random weights at full
    size: the official run saves its weights (``--save-state``, an official checkpoint) and
    its outputs, ovseg loads that checkpoint through its converter. Returns
    :func:`output_differences` of the two."""
    import numpy as np

    from ovseg.predictor import OVSegPredictor

    with tempfile.TemporaryDirectory(prefix="ovseg-official-") as scratch:
        state, out = Path(scratch) / "official.pth", Path(scratch) / "official.npz"
        command = [
            str(folder / "venv/bin/python"),
            str(folder / "run_ref.py"),
            *("--image", args.image, "--vocab", args.vocab, "--seed", "0"),
            *("--scale-init", "100", "--token-std", "3"),
            *("--short-side", str(short_side), "--threads", str(args.threads)),
            *("--repeats", "1", "--out", str(out), "--save-state", str(state)),
        ]
        _run_measured(command, threads=args.threads)
        reference = dict(np.load(out))
        predictor = OVSegPredictor.from_pretrained(
            config=args.config, weights=state, precision="fp32"
        )
    predictor.set_vocabulary(args.vocab)
    features = predictor.encode(args.image, short_side=short_side)
    result = predictor.segment(features, tasks=("panoptic", "semantic", "instance"))
    ours = {
        "final_cls_logits": result["class_logits"],
        "pred_masks": result["mask_logits"],
        "sem_seg": result["sem_seg"],
        "segments": len(result["segments_info"]),
    }
    return output_differences(reference, ours)


def output_differences(reference: dict, ours: dict) -> dict:
    """Per output, the largest absolute difference relative to the official output's largest
    magnitude; the semantic argmax agreement; the panoptic segment counts."""
    import numpy as np

    def as_array(value):
        return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, float)

    report = {}
    for name in ("final_cls_logits", "pred_masks", "sem_seg"):
        theirs, mine = as_array(reference[name]), as_array(ours[name])
        if theirs.shape != mine.shape:
            raise HarnessError(f"{name}: official shape {theirs.shape}, ovseg {mine.shape}")
        scale = max(float(np.abs(theirs).max()), 1e-12)
        report[f"{name}_max_abs"] = float(np.abs(theirs - mine).max())
        report[f"{name}_relative"] = report[f"{name}_max_abs"] / scale
    theirs, mine = as_array(reference["sem_seg"]), as_array(ours["sem_seg"])
    report["semantic_agreement"] = float((theirs.argmax(0) == mine.argmax(0)).mean())
    report["segments_official"] = int(len(reference["segments_id"]))
    report["segments_ovseg"] = int(ours["segments"])
    return report


def format_differences(report: dict, short_side: int) -> str:
    """One line per output of :func:`compare_outputs`."""
    parts = [
        f"{name}: max |diff| {report[f'{name}_max_abs']:.2e} "
        f"({report[f'{name}_relative']:.1e} of its largest value)"
        for name in ("final_cls_logits", "pred_masks", "sem_seg")
    ]
    agreement = report["semantic_agreement"]
    return (
        f"outputs at short side {short_side}, official vs ovseg fp32 on the same weights: "
        + "; ".join(parts)
        + f"; semantic argmax agreement {agreement:.4%}; panoptic segments "
        f"{report['segments_official']} vs {report['segments_ovseg']}"
        + ("" if math.isfinite(agreement) else " (no pixels)")
    )
