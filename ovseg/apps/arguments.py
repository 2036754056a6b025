"""Command-line arguments shared by the front ends: the model, the dataset, booleans."""

from __future__ import annotations

import argparse
import sys


def boolean(text: str) -> bool:
    """true / false (also 1 / 0, yes / no); anything else is refused, not read as false."""
    value = text.lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: write true or false")


def precision_list(text: str) -> list[str]:
    """Comma-separated precisions, each one of ovseg.precision.PRECISIONS; else refused."""
    from ovseg.precision import check_precision

    try:
        return [check_precision(name.strip()) for name in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_model_arguments(
    parser: argparse.ArgumentParser, *, default: str = "auto", precision: str = "auto"
) -> None:
    """--model / --weights / --config / --device / --precision."""
    from ovseg import model_zoo

    choices = ", ".join(model_zoo.MODEL_ZOO)
    auto = (
        "; 'auto': the real FC-CLIP model if its weights are present, else the shipped "
        "synthetic_tiny (said on stderr)"
        if default == "auto"
        else ""
    )
    parser.add_argument(
        "--model", default=default, help=f"zoo model: {choices}{auto} (default: {default})"
    )
    parser.add_argument("--weights", help="weights file (ovseg .safetensors or official .pth)")
    parser.add_argument("--config", help="config preset or YAML to go with --weights")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    from ovseg.precision import PRECISIONS

    parser.add_argument(
        "--precision",
        default=precision,
        choices=PRECISIONS,
        help="numeric precision of the image network: fp32 is exact (the official outputs); "
        "auto picks the fastest path this hardware runs natively (bf16 on GPUs and CPUs with "
        "AMX / AVX512-BF16, int8 on CPUs where it measures faster), else fp32 "
        f"(default: {precision})",
    )


def add_dataset_arguments(parser: argparse.ArgumentParser, *, semantic: bool = False) -> None:
    """A built-in dataset (--dataset) or the paths of one."""
    group = parser.add_argument_group("data (a built-in dataset, or the paths of one)")
    group.add_argument("--dataset", help="built-in panoptic dataset, e.g. coco_2017_val_panoptic")
    group.add_argument("--data-root", help="root of the built-in datasets (default: $OVSEG_DATA)")
    group.add_argument("--images", help="image directory")
    group.add_argument("--panoptic-json", help="COCO panoptic JSON")
    group.add_argument("--panoptic-dir", help="directory of panoptic PNGs")
    if semantic:
        group.add_argument("--semantic-labels", help="label PNG directory (semantic dataset)")
    group.add_argument(
        "--vocab",
        help="vocabulary replacing the dataset's class names (required for semantic datasets)",
    )


def dataset_from_arguments(args: argparse.Namespace):
    """The PanopticDataset or SemanticDataset the arguments name; ValueError if incomplete."""
    from ovseg.data import PanopticDataset, SemanticDataset, builtin_panoptic
    from ovseg.vocabulary import load_vocabulary

    vocabulary = load_vocabulary(args.vocab) if args.vocab else None
    if getattr(args, "semantic_labels", None):
        if vocabulary is None or not args.images:
            raise ValueError("a semantic dataset needs --images, --semantic-labels and --vocab")
        return SemanticDataset(args.images, args.semantic_labels, vocabulary)
    if args.dataset:
        return builtin_panoptic(args.dataset, args.data_root, vocabulary=vocabulary)
    if args.images and args.panoptic_json and args.panoptic_dir:
        return PanopticDataset(
            args.images, args.panoptic_json, args.panoptic_dir, vocabulary=vocabulary
        )
    raise ValueError(
        "give --dataset NAME, or --images with --panoptic-json and --panoptic-dir"
        + (
            ", or --images with --semantic-labels and --vocab"
            if hasattr(args, "semantic_labels")
            else ""
        )
    )


def load_predictor_from_arguments(args, **kwargs):
    """:func:`ovseg.predictor.load_predictor` with the model arguments of
    :func:`add_model_arguments` (--model / --weights / --config / --device / --precision);
    ``kwargs`` go to it too (``log``, ``max_output_pixels``)."""
    from ovseg.predictor import load_predictor

    return load_predictor(
        args.model,
        weights=args.weights,
        config=args.config,
        device=args.device,
        precision=args.precision,
        **kwargs,
    )


def say_precision(predictor) -> None:
    """On stderr: the precision's warning if any, then one line with the precision in use,
    why, and on what hardware."""
    choice = predictor.precision
    if choice.warning:
        print(choice.warning, file=sys.stderr)
    print(
        f"ovseg: precision {choice.precision} ({choice.reason}) on {choice.hardware.describe()}",
        file=sys.stderr,
    )
