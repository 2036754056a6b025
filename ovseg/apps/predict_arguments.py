"""The ``ovseg predict`` command line: its parser, and the checks of its arguments that run
before any input is read or model loaded (one-line UsageError naming the option)."""

from __future__ import annotations

import argparse

from ovseg.apps.outputs import UsageError
from ovseg.results import INSTANCE_SCORE_THRESHOLD
from ovseg.video import DEFAULT_MAX_FRAMES

MIN_OUTPUT_PIXELS = 64 * 64


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``ovseg predict`` (``prog``: the name its usage line shows)."""
    from ovseg.apps.arguments import add_model_arguments, add_sam_arguments, add_threads_argument
    from ovseg.vocabulary import SHIPPED_VOCABULARIES

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Open-vocabulary segmentation: name any classes, get panoptic, semantic or "
        "instance segmentation. Writes NAME_overlay.png, NAME_labels.png and NAME.json per "
        "image into --output.",
        epilog='Example: ovseg predict photo.jpg --classes "zebra, traffic cone/pylon, sky" '
        "--task panoptic --output out/. Prompts: ovseg predict photo.jpg --vocab ade150 "
        '--points "320,240" --boxes "10,20,200,300" (masks from the model\'s prompt head, or '
        "from SAM with --masks sam) give one mask per object with its classes.",
    )
    parser.add_argument("inputs", nargs="*", help="image or video files and/or directories of them")
    parser.add_argument(
        "--examples",
        action="store_true",
        help="also segment the example images shipped with ovseg (3 photos, 3 synthetic scenes)",
    )
    names = parser.add_mutually_exclusive_group()
    names.add_argument(
        "--classes",
        help='class names separated by commas, synonyms by "/": "person/child, zebra, sky"',
    )
    names.add_argument(
        "--vocab",
        help=f"a shipped vocabulary ({', '.join(SHIPPED_VOCABULARIES)}) or a vocabulary file",
    )
    parser.add_argument("--task", choices=("panoptic", "semantic", "instance"), default="panoptic")
    parser.add_argument(
        "--head",
        choices=("fcclip", "pixel-text"),
        default="fcclip",
        help="fcclip: the model's masks and classes (default); pixel-text: with --task "
        "semantic, every location of the frozen CLIP map matched with the class names "
        "(training-free baseline)",
    )
    from ovseg.apps.arguments import add_keep_novel_argument

    add_keep_novel_argument(parser)
    parser.add_argument(
        "--heatmap",
        action="append",
        metavar="TEXT",
        help='a relevancy heat map for this phrase, e.g. --heatmap "red car" (repeat for more): '
        "writes NAME_heatmap_N_TEXT.png; without --classes / --vocab only heat maps are made",
    )
    parser.add_argument("--output", default="outputs", help="output directory (default: outputs)")
    add_model_arguments(parser)
    add_threads_argument(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="N",
        help="images of a folder encoded together, up to N at a time when they resize to the "
        "same size (default 1; pays on a GPU more than on a CPU). Reading the next images and "
        "writing the last ones run beside the network at any N",
    )
    parser.add_argument(
        "--onnx",
        metavar="DIR",
        help="run an `ovseg export` folder in ONNX Runtime instead of the PyTorch model "
        "(images, the model's own masks; not with prompts, SAM masks or heat maps)",
    )
    parser.add_argument(
        "--short-side",
        type=int,
        default=None,
        help="test-time short side in pixels of the model's image pass, prompts and SAM masks' "
        "labels included (default: the model's, 800; SAM draws its masks at its own size)",
    )
    parser.add_argument(
        "--max-output-pixels",
        type=int,
        default=2048 * 1024,
        help="larger images get outputs at a downscaled size with this many "
        "pixels, to bound memory (default: 2048x1024)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=DEFAULT_MAX_FRAMES,
        help="longest video accepted, in frames (default: %(default)s)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="--task instance only: draw and list instances scoring at least this (0..1); the "
        f"JSON keeps every instance, marked 'shown' (default: {INSTANCE_SCORE_THRESHOLD})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="redo inputs whose outputs exist and were made with the same settings",
    )
    add_sam_arguments(parser)
    return parser


def check_arguments(args) -> None:
    """Refuse, in one line (UsageError), arguments that contradict each other or that nothing
    would read; parse the prompts (``args.prompts``) and check SAM's weights exist."""
    from ovseg.predictor import resolve_device

    if args.short_side is not None and args.short_side < 32:
        raise UsageError("--short-side must be at least 32 pixels")
    if args.max_output_pixels < MIN_OUTPUT_PIXELS:
        raise UsageError(
            f"--max-output-pixels {args.max_output_pixels} is too small: give at least "
            f"{MIN_OUTPUT_PIXELS} (64x64)"
        )
    if args.max_frames < 1:
        raise UsageError("--max-frames must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    _check_score_threshold(args)
    if args.device is not None:
        resolve_device(args.device)
    if not args.inputs and not args.examples:
        raise UsageError("name an image, video or directory to segment (or --examples)")
    if args.classes is None and args.vocab is None and not args.heatmap:
        raise UsageError("name the classes with --classes or --vocab (or ask for --heatmap TEXT)")
    if args.heatmap:
        from ovseg.heatmap import check_phrases

        args.heatmap = check_phrases(args.heatmap)
    if args.onnx is not None:
        _check_onnx_arguments(args)
    if args.keep_novel:
        _check_keep_novel_arguments(args)
    if args.head == "pixel-text":
        if args.task != "semantic":
            raise UsageError("--head pixel-text gives semantic output only: add --task semantic")
        if args.points or args.boxes or args.masks == "sam":
            raise UsageError("--head pixel-text makes no masks: drop --points, --boxes, --masks")
    for option, text in (("--points", args.points), ("--boxes", args.boxes)):
        if text is not None and not text.replace(";", "").strip():
            raise UsageError(f'{option} "{text}" is empty: give {option[2:]} or drop {option}')
    if args.points or args.boxes:
        from ovseg.sam.prompts import parse_prompts

        args.prompts = parse_prompts(args.points, args.boxes)  # image bounds: per image
    if args.masks == "sam":
        from ovseg.apps.arguments import check_sam_arguments
        from ovseg.sam.zoo import sam_weights

        check_sam_arguments(args)
        sam_weights(args.sam_model, args.sam_weights)  # missing weights: say where, now


def _check_keep_novel_arguments(args) -> None:
    """--keep-novel: only where the model's own masks make panoptic output (UsageError)."""
    for flag, given in (
        (f"--task {args.task}", args.task != "panoptic"),
        ("--points / --boxes", args.points or args.boxes),
        ("--masks sam", args.masks == "sam"),
        ("--onnx", args.onnx is not None),
    ):
        if given:
            raise UsageError(
                f"--keep-novel changes the panoptic output of the model's own masks, not "
                f"{flag}: drop one of them"
            )


def _check_score_threshold(args) -> None:
    """--score-threshold: in 0..1 and for --task instance only (elsewhere nothing reads it:
    refused rather than ignored); unset, the default."""
    if args.score_threshold is None:
        args.score_threshold = INSTANCE_SCORE_THRESHOLD
        return
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UsageError(f"--score-threshold {args.score_threshold} is not in 0..1")
    if args.task != "instance" or args.points or args.boxes:
        used = "--points / --boxes" if args.points or args.boxes else f"--task {args.task}"
        raise UsageError(
            f"--score-threshold applies to --task instance only, not {used} (every segment "
            "is drawn there): drop it"
        )


def _check_onnx_arguments(args) -> None:
    """--onnx: an export folder, and nothing only the PyTorch model does (UsageError)."""
    from ovseg.export import read_export

    for flag, given in (
        ("--heatmap", args.heatmap),
        ("--points / --boxes", args.points or args.boxes),
        ("--masks sam", args.masks == "sam"),
        ("--head pixel-text", args.head == "pixel-text"),
        ("--weights / --config", args.weights or args.config),
        ("--device", args.device not in (None, "cpu")),
        (f"--precision {args.precision}", args.precision not in ("auto", "fp32")),
    ):
        if given:
            raise UsageError(f"--onnx runs the exported model's own masks in fp32: drop {flag}")
    args.export_settings = read_export(args.onnx)  # not an export: one line, before any work
    args.precision = "fp32"
