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


def add_keep_novel_argument(parser: argparse.ArgumentParser) -> None:
    """--keep-novel / --no-keep-novel (default: the model config's inference.keep_novel)."""
    parser.add_argument(
        "--keep-novel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="panoptic output keeps the masks whose best class was unseen in training (not in "
        "the model's training vocabulary) even where the trained head says 'no object', as it "
        "was taught for every unlabelled class; the frozen CLIP names them. Off for the "
        "official FC-CLIP (its published rule); default: the model config's "
        "inference.keep_novel",
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """--threads: CPU threads of the torch work (default: :func:`ovseg.threads.default_threads`)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the cores this "
        "process may use, shared among torchrun's processes). On a machine other jobs keep "
        "busy, give the cores that are free: more threads than free cores is far slower",
    )


def add_sam_arguments(parser: argparse.ArgumentParser) -> None:
    """--masks / --sam-model / --sam-weights / --points / --boxes."""
    from ovseg.sam.prompts import MAX_BOXES, MAX_POINTS
    from ovseg.sam.zoo import DEFAULT_SAM, SAM_ARCHITECTURES

    group = parser.add_argument_group("masks from SAM, and prompts")
    group.add_argument(
        "--masks",
        choices=("model", "sam"),
        default="model",
        help="where masks come from: the model's own mask generator, or Segment Anything "
        "(automatic masks, or the --points / --boxes prompts), each labelled by the model's "
        "frozen CLIP (default: model)",
    )
    group.add_argument(
        "--sam-model",
        default=DEFAULT_SAM,
        choices=tuple(SAM_ARCHITECTURES),
        help="SAM architecture (default: %(default)s; 'tiny' is a random-weight test model)",
    )
    group.add_argument(
        "--sam-weights",
        help="SAM checkpoint file (default: the official file of --sam-model in $OVSEG_WEIGHTS)",
    )
    group.add_argument(
        "--sam-points-per-side",
        type=int,
        default=32,
        help="automatic masks: prompt grid points per image side (default: %(default)s)",
    )
    group.add_argument(
        "--sam-min-iou",
        type=float,
        default=0.88,
        help="automatic masks: keep masks whose predicted IoU is at least this (0..1; "
        "default: %(default)s, SAM's)",
    )
    group.add_argument(
        "--sam-min-stability",
        type=float,
        default=0.95,
        help="automatic masks: keep masks at least this stable (0..1; default: %(default)s)",
    )
    group.add_argument(
        "--points",
        help='clicks "x,y[,1|0]; ..." in image pixels (x the column; 1 positive, the default, '
        f"0 negative; at most {MAX_POINTS}): together they prompt one object",
    )
    group.add_argument(
        "--boxes",
        help=f'boxes "x0,y0,x1,y1; ..." in image pixels (at most {MAX_BOXES}), one object each; '
        "with exactly one box, --points refine it",
    )


def load_sam_from_arguments(args, device):
    """The :class:`ovseg.sam.masks.SamMasks` of --sam-model / --sam-weights, or None when
    --masks is not sam. FileNotFoundError / WeightsError as :func:`ovseg.sam.zoo.load_sam`."""
    if args.masks != "sam":
        return None
    from ovseg.sam.masks import SamMasks
    from ovseg.sam.zoo import load_sam

    sam = load_sam(args.sam_model, weights=args.sam_weights, device=device)
    return SamMasks(
        sam,
        name=args.sam_weights or f"sam_{args.sam_model}",
        points_per_side=args.sam_points_per_side,
        pred_iou_thresh=args.sam_min_iou,
        stability_score_thresh=args.sam_min_stability,
    )


def check_sam_arguments(args) -> None:
    """Refuse bad SAM options before anything is loaded (ValueError saying which)."""
    if args.sam_points_per_side < 1:
        raise ValueError("--sam-points-per-side must be at least 1")
    for option, value in (
        ("--sam-min-iou", args.sam_min_iou),
        ("--sam-min-stability", args.sam_min_stability),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{option} {value} is not in 0..1")


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
        keep_novel=getattr(args, "keep_novel", None),
        **kwargs,
    )


def load_text_model_from_arguments(args, **kwargs):
    """:func:`ovseg.predictor.load_text_model` (the model's text half alone) with the model
    arguments of :func:`add_model_arguments` (--precision is the image network's: unused)."""
    from ovseg.predictor import load_text_model

    return load_text_model(
        args.model, weights=args.weights, config=args.config, device=args.device, **kwargs
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


def precision_record(predictor) -> dict:
    """The precision in use, as each output JSON records it: asked for, in use, why, and on
    what hardware (an ONNX Runtime predictor runs its fp32 export)."""
    choice = getattr(predictor, "precision", None)
    if choice is None:
        return {"requested": "fp32", "precision": "fp32", "reason": "ONNX Runtime, fp32 export"}
    return {
        "requested": choice.requested,
        "precision": choice.precision,
        **({"other_layers": choice.others} if choice.precision == "int8" else {}),
        "reason": choice.reason,
        "hardware": choice.hardware.describe(),
    }
