"""Logic of ``demo/predict.py``: segment images for any classes and write overlay, label map
and JSON per image. Thin wrapper: ``main(argv)`` returns an exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from ovseg.checkpoint import temp_path_beside
from ovseg.video import DEFAULT_MAX_FRAMES, VIDEO_SUFFIXES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}


class UsageError(ValueError):
    """Bad input from the user: one line, non-zero exit, nothing written."""


def build_parser() -> argparse.ArgumentParser:
    from ovseg.predictor import add_model_arguments

    parser = argparse.ArgumentParser(
        prog="demo/predict.py",
        description="Open-vocabulary segmentation: name any classes, get panoptic, semantic or "
        "instance segmentation. Writes NAME_overlay.png, NAME_labels.png and NAME.json per "
        "image into --output.",
        epilog='Example: python demo/predict.py photo.jpg --classes "zebra, traffic cone/pylon, '
        'sky" --task panoptic --output out/',
    )
    parser.add_argument("inputs", nargs="+", help="image or video files and/or directories of them")
    names = parser.add_mutually_exclusive_group(required=True)
    names.add_argument(
        "--classes",
        help='class names separated by commas, synonyms by "/": "person/child, zebra, sky"',
    )
    names.add_argument(
        "--vocab",
        help="a shipped vocabulary (coco, ade150, ade847, pc59, pc459, voc21, cityscapes, lvis, "
        "synthetic_world) or a vocabulary file",
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
    """Write every file to a temp name first, then rename them all: no partial outputs."""
    temps = {}
    try:
        for key, path in paths.items():
            temps[key] = temp_path_beside(path)
        overlay.save(temps["overlay"], format="PNG")
        labels.save(temps["labels"], format="PNG")
        with open(temps["json"], "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False, indent=1)
        for key, path in paths.items():
            os.replace(temps.pop(key), path)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)


def process_image(predictor, image_path: Path, args, out_dir: Path, model_label: str) -> dict:
    import numpy as np

    from ovseg.preprocess import load_image, resize_image
    from ovseg.visualize import describe, draw_result, label_map_image, mask_to_rle

    image = load_image(image_path)
    result = predictor.predict(image, tasks=(args.task,), short_side=args.short_side)
    label_map, segments = describe(result, args.task)
    shown = resize_image(image, result["output_size"])
    overlay = draw_result(shown, segments, args.task)
    record = {
        "image": str(image_path),
        "image_size": list(result["image_size"]),
        "output_size": list(result["output_size"]),
        "task": args.task,
        "model": model_label,
        "classes": result["vocabulary"].names,
        "segments": [
            {k: v for k, v in s.items() if k != "mask"} | {"rle": mask_to_rle(s["mask"])}
            for s in segments
        ],
    }
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, ValueError, FileNotFoundError, RuntimeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def run(args) -> int:
    from tqdm import tqdm

    from ovseg.predictor import as_vocabulary, load_predictor
    from ovseg.preprocess import ImageError
    from ovseg.video import VideoError
    from ovseg.vocabulary import parse_class_list

    if args.short_side is not None and args.short_side < 32:
        raise UsageError("--short-side must be at least 32 pixels")
    vocabulary = (
        parse_class_list(args.classes) if args.classes is not None else as_vocabulary(args.vocab)
    )
    images = collect_images(args.inputs)
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
