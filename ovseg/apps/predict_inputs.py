"""What ``ovseg predict`` will segment: the inputs named (files and folders), each checked
(an image or video that can be read, prompts inside it) and planned with its output paths
and settings, before the model loads."""

from __future__ import annotations

from pathlib import Path

from ovseg.apps.outputs import (
    UsageError,
    is_up_to_date,
    output_paths,
    output_stems,
    run_settings,
)
from ovseg.video import VIDEO_SUFFIXES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}


def collect_images(inputs: list[str]) -> list[Path]:
    """The files named, and the images and videos in the folders named (sorted); UsageError
    for a missing input or a folder with none."""
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


def check_input(path: Path, max_frames: int) -> dict | None:
    """Refuse, before any model is loaded, an input that is no image or video at all (missing,
    empty, not an image format, too large, truncated) or a video above ``max_frames``
    (ImageError / VideoError saying why). Returns a video's probe (None for an image)."""
    from ovseg.preprocess import check_image
    from ovseg.video import check_frame_limit, probe

    if path.suffix.lower() in VIDEO_SUFFIXES:
        info = probe(path)
        check_frame_limit(path, info, max_frames)
        return info
    check_image(path)  # decodes once: a truncated file is found before the model loads
    return None


def plan_inputs(args, vocabulary, out_dir: Path) -> tuple[list, list, int, list]:
    """-> (todo [(input, output paths, settings, video probe or None)], bad [(input, error)],
    skipped count, warnings [one line each])."""
    from ovseg.predictor import model_label
    from ovseg.preprocess import ImageError, image_frame_count
    from ovseg.sam.prompts import PromptError
    from ovseg.video import VideoError

    images = collect_images(args.inputs)
    if args.examples:
        from ovseg.assets import example_images

        images += example_images()
    stems = output_stems(images)
    model = model_label(args.model, args.weights)
    if args.onnx is not None:
        model = args.export_settings["model"]
    todo, bad, skipped, warnings = [], [], 0, []
    for image in images:
        paths = output_paths(
            out_dir, image, stems[image], heatmaps=args.heatmap, segment=vocabulary is not None
        )
        settings = run_settings(args, model, vocabulary, image)
        if args.onnx is not None:
            settings["onnx"] = str(Path(args.onnx).resolve())
        if not args.overwrite and is_up_to_date(paths, settings):
            skipped += 1
            continue
        try:
            info = check_input(image, args.max_frames)
            _check_prompts_fit(image, info, args)
        except (ImageError, VideoError, PromptError) as error:
            bad.append((image, error))
            continue
        todo.append((image, paths, settings, info))
        if info is None and (frames := image_frame_count(image)) > 1:
            warnings.append(
                f"warning: {image} is animated ({frames} frames): only the first frame is "
                "segmented (to segment them all, make it a video: ffmpeg -i in.gif out.mp4)"
            )
    return todo, bad, skipped, warnings


def _check_prompts_fit(path: Path, video_info, args) -> None:
    """Prompts and SAM masks are for images; prompts must lie inside the image
    (PromptError saying which)."""
    from ovseg.preprocess import probe_image
    from ovseg.sam.prompts import PromptError, make_prompts

    if video_info is not None and (args.prompts is not None or args.masks == "sam"):
        raise PromptError(f"{path}: --points, --boxes and --masks sam work on images, not videos")
    if video_info is not None and args.onnx is not None:
        raise PromptError(f"{path}: --onnx runs on images; segment videos with the PyTorch model")
    if video_info is not None and args.heatmap:
        raise PromptError(f"{path}: --heatmap works on images, not videos")
    if args.prompts is not None:
        try:
            make_prompts(
                args.prompts.points,
                args.prompts.point_labels,
                args.prompts.boxes,
                image_size=probe_image(path),
            )
        except PromptError as error:
            raise PromptError(f"{path}: {error}") from None
