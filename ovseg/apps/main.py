"""The ``ovseg`` command: one entry point, a sub-command per front end.

    ovseg predict IMAGES --classes "cat, dog"   # = python demo/predict.py
    ovseg app                                  # = python demo/app.py (web demo)
    ovseg train | eval | bench | convert ...   # = python tools/<script>.py

Each sub-command is the ``main`` of a module in :mod:`ovseg.apps`, imported only when it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import shlex
import sys

# name: (module in ovseg.apps, what it does; the script that runs the same main)
COMMANDS = {
    "predict": ("predict", "segment images or videos for classes you name (demo/predict.py)"),
    "app": ("web", "the Gradio web demo (demo/app.py)"),
    "train": ("train", "train on a COCO-panoptic format dataset (tools/train.py)"),
    "train-prompt-head": (
        "train_prompt_head",
        "train a prompt head (SAM's decoder on the frozen CLIP) (tools/train_prompt_head.py)",
    ),
    "bench-prompts": (
        "bench_prompts",
        "prompted-mask IoU, labels and cost in the synthetic world (tools/bench_prompts.py)",
    ),
    "eval": ("eval", "PQ / mIoU / AP of a model on a dataset (tools/eval.py)"),
    "text-ablation": (
        "text_ablation",
        "context-aware text ablation in the synthetic world (tools/text_ablation.py)",
    ),
    "export": (
        "export",
        "ONNX graphs whose vocabulary stays an input, checked in ONNX Runtime (tools/export.py)",
    ),
    "bench": ("bench", "per-stage inference latency and memory (tools/benchmark.py)"),
    "convert": ("convert", "official FC-CLIP .pth -> ovseg safetensors (tools/convert_fcclip.py)"),
    "bench-train": ("bench_train", "training throughput (tools/bench_train.py)"),
    "bench-pq": ("bench_pq", "PQ evaluator speed (tools/bench_pq.py)"),
    "bench-gpu": (
        "bench_gpu",
        "images/s per precision, batch size and torch.compile, for a GPU (tools/bench_gpu.py)",
    ),
    "bench-matmul": (
        "bench_matmul",
        "the machine's peak matrix-product rate per precision (tools/bench_matmul.py)",
    ),
    "bench-demo": ("bench_demo", "web-demo latencies without a browser (tools/bench_demo.py)"),
    "agreement": (
        "agreement",
        "how far panoptic and semantic agree, per class (tools/task_agreement.py)",
    ),
    "fields": (
        "fields",
        "3D / 4D language fields: fit Gaussians to posed views or video, query with text "
        "(tools/fields.py)",
    ),
    "bench-fields": (
        "bench_fields",
        "3D language fields measured in the synthetic 3D world (tools/bench_fields.py)",
    ),
    "bench-lift": (
        "bench_lift",
        "lifting onto Gaussian splats: accuracy and speed at scale (tools/bench_lift.py)",
    ),
    "bench-fields4d": (
        "bench_fields4d",
        "4D language fields measured in the synthetic 4D world (tools/bench_fields4d.py)",
    ),
    "synthetic-world": (
        "synthetic_world",
        "the synthetic open-vocabulary experiment (tools/synthetic_world.py)",
    ),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: ovseg COMMAND [options]   (ovseg COMMAND --help for its options)\n\n"
        "Open-vocabulary segmentation (FC-CLIP): name any classes, get panoptic, semantic or "
        "instance segmentation.\n\ncommands:\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from ovseg import __version__

        print(f"ovseg {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"error: unknown command '{name}': choose one of {', '.join(COMMANDS)} (ovseg --help)",
            file=sys.stderr,
        )
        return 2
    try:
        module = importlib.import_module(f"ovseg.apps.{COMMANDS[name][0]}")
        return module.main(rest, prog=f"ovseg {name}")
    except KeyboardInterrupt:
        return say_interrupted(name, rest)


def say_interrupted(name: str, rest: list[str]) -> int:
    """Ctrl-C in ``ovseg NAME REST``: one line, no traceback, what to run next; exit code 130."""
    print(f"interrupted; {resume_hint(name, rest)}", file=sys.stderr)
    return 130


@contextlib.contextmanager
def ctrl_c_as_one_line(name: str):
    """For the scripts in demo/ and tools/ (the command NAME with ``sys.argv``): Ctrl-C in the
    block, its imports included, ends the program as ``ovseg NAME`` does (:func:`main`)."""
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(say_interrupted(name, sys.argv[1:])) from None


def resume_hint(name: str, rest: list[str]) -> str:
    """What to run after Ctrl-C in ``ovseg NAME REST``: the command that continues the work
    where the command can, else that it starts over."""
    again = shlex.join(["ovseg", name, *rest])
    if name == "train":
        given = any(arg == "--resume" or arg.startswith("--resume=") for arg in rest)
        resume = [] if given else ["--resume"]
        return f"resume with: {shlex.join(['ovseg', name, *rest, *resume])}"
    if name == "train-prompt-head":  # it resumes from its checkpoints unless told not to
        rest = [arg for arg in rest if arg != "--no-resume"]
        return f"resume with (from the last checkpoint): {shlex.join(['ovseg', name, *rest])}"
    if name == "fields" and rest[:1] in (["fit"], ["lift"]):
        return f"resume with the same command (it continues in its --out folder): {again}"
    if name == "predict":
        return f"resume with the same command (finished inputs are skipped): {again}"
    if name == "text-ablation":
        return f"resume with the same command (finished rows are not run again): {again}"
    return f"nothing is resumed: run the command again to start over ({again})"


if __name__ == "__main__":
    sys.exit(main())
