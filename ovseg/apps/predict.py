"""``ovseg predict`` (and ``demo/predict.py``): segment images for any classes and write an
overlay, a label map and a JSON per image. ``main(argv)`` returns an exit code."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ovseg.fileio import atomic_write_many
from ovseg.video import DEFAULT_MAX_FRAMES, VIDEO_SUFFIXES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}


class UsageError(ValueError):
    """Bad input from the user: one line, non-zero exit, nothing written."""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from ovseg.apps.arguments import add_model_arguments
    from ovseg.vocabulary import SHIPPED_VOCABULARIES

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Open-vocabulary segmentation: name any classes, get panoptic, semantic or "
        "instance segmentation. Writes NAME_overlay.png, NAME_labels.png and NAME.json per "
        "image into --output.",
        epilog='Example: ovseg predict photo.jpg --classes "zebra, traffic cone/pylon, sky" '
        "--task panoptic --output out/",
    )
    parser.add_argument("inputs", nargs="*", help="image or video files and/or directories of them")
    parser.add_argument(
        "--examples",
        action="store_true",
        help="also segment the example images shipped with ovseg (3 photos, 3 synthetic scenes)",
    )
    names = parser.add_mutually_exclusive_group(required=True)
    names.add_argument(
        "--classes",
        help='class names separated by commas, synonyms by "/": "person/child, zebra, sky"',
    )
    names.add_argument(
        "--vocab",
        help=f"a shipped vocabulary ({', '.join(SHIPPED_VOCABULARIES)}) or a vocabulary file",
    )
    parser.add_argument("--task", choices=("panoptic", "semantic", "instance"), default="panoptic")
    parser.add_argument("--output", default="outputs", help="output directory (default: outputs)")
    add_model_arguments(parser)
    parser.add_argument(
        "--short-side",
        type=int,
        default=None,
        help="test-time short side in pixels (default: the model's, 800)",
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
        "--overwrite", action="store_true", help="redo images whose outputs already exist"
    )
    return parser


def collect_images(inputs: list[str]) -> list[Path]:
    images = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
            if not found:
                raise UsageError(f"directory {path} has no image files")
            images.extend(found)
        elif path.exists():
            images.append(path)
        else:
            raise UsageError(f"input not found: {path}")
    return images


def check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ovseg-check-"):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write to output directory {directory} ({error.strerror}): "
            "choose another --output"
        ) from error


def output_paths(directory: Path, image: Path) -> dict[str, Path]:
    stem = image.stem
    if image.suffix.lower() in VIDEO_SUFFIXES:
        return {
            "overlay": directory / f"{stem}_overlay.mp4",
            "json": directory / f"{stem}_frames.json",
        }
    return {
        "overlay": directory / f"{stem}_overlay.png",
        "labels": directory / f"{stem}_labels.png",
        "json": directory / f"{stem}.json",
    }


def write_outputs(paths: dict[str, Path], overlay, labels, record: dict) -> None:
    """Write the three files through temp names and rename them together: no partial outputs."""
    atomic_write_many(
        {
            paths["overlay"]: lambda tmp: overlay.save(tmp, format="PNG"),
            paths["labels"]: lambda tmp: labels.save(tmp, format="PNG"),
            paths["json"]: lambda tmp: Path(tmp).write_text(
                json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8"
            ),
        }
    )


def process_image(predictor, image_path: Path, args, out_dir: Path, model_label: str) -> dict:
    import numpy as np

    from ovseg.preprocess import load_image, resize_image
    from ovseg.results import describe, image_record, label_map_image
    from ovseg.visualize import draw_result

    image = load_image(image_path)
    result = predictor.predict(image, tasks=(args.task,), short_side=args.short_side)
    label_map, segments = describe(result, args.task)
    overlay = draw_result(resize_image(image, result["output_size"]), segments, args.task)
    record = image_record(result, segments, task=args.task, model=model_label, image=image_path)
    write_outputs(
        output_paths(out_dir, image_path),
        overlay,
        label_map_image(np.asarray(label_map), args.task),
        record,
    )
    return record


def process_video(predictor, video_path: Path, args, out_dir: Path) -> None:
    """NAME_overlay.mp4 and NAME_frames.json: panoptic per frame, tracked thing ids."""
    from tqdm import tqdm

    from ovseg.video import segment_video

    with tqdm(desc=video_path.name, unit="frame", file=sys.stderr) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        record = segment_video(
            predictor,
            video_path,
            out_dir,
            max_frames=args.max_frames,
            short_side=args.short_side,
            progress=advance,
        )
    print(f"{video_path}: {record['frames']} frames -> {out_dir}")


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return run(args)
    except (UsageError, ValueError, FileNotFoundError, RuntimeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def run(args) -> int:
    from tqdm import tqdm

    from ovseg.predictor import load_predictor
    from ovseg.preprocess import ImageError
    from ovseg.video import VideoError
    from ovseg.vocabulary import as_vocabulary, parse_class_list

    if args.short_side is not None and args.short_side < 32:
        raise UsageError("--short-side must be at least 32 pixels")
    vocabulary = (
        parse_class_list(args.classes) if args.classes is not None else as_vocabulary(args.vocab)
    )
    if not args.inputs and not args.examples:
        raise UsageError("name an image, video or directory to segment (or --examples)")
    images = collect_images(args.inputs)
    if args.examples:
        from ovseg.assets import example_images

        images += example_images()
    out_dir = Path(args.output)
    check_writable(out_dir)
    todo = [
        p
        for p in images
        if args.overwrite or not all(q.exists() for q in output_paths(out_dir, p).values())
    ]
    if len(todo) < len(images):
        print(
            f"skipping {len(images) - len(todo)} image(s) whose outputs exist "
            "(--overwrite to redo)",
            file=sys.stderr,
        )
    if not todo:
        return 0
    predictor = load_predictor(
        args.model,
        weights=args.weights,
        config=args.config,
        device=args.device,
        log=print,
        max_output_pixels=args.max_output_pixels,
    )
    predictor.set_vocabulary(vocabulary)
    model_label = predictor.model_name
    failures = 0
    for image_path in tqdm(
        todo, desc="segmenting", unit="file", disable=len(todo) == 1, file=sys.stderr
    ):
        try:
            if image_path.suffix.lower() in VIDEO_SUFFIXES:
                process_video(predictor, image_path, args, out_dir)
                continue
            record = process_image(predictor, image_path, args, out_dir, model_label)
        except (ImageError, VideoError) as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        if len(todo) == 1:
            found = ", ".join(sorted({s["class"] for s in record["segments"]})) or "nothing"
            print(f"{image_path}: {len(record['segments'])} segments ({found}) -> {out_dir}")
    if failures:
        print(f"{failures} of {len(todo)} image(s) failed", file=sys.stderr)
        return 1
    return 0
