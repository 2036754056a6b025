"""``ovseg predict`` (and ``demo/predict.py``): segment images for any classes and write an
overlay, a label map and a JSON per image. ``main(argv)`` returns an exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovseg.apps.outputs import (
    UsageError,
    check_writable,
    is_up_to_date,
    output_paths,
    output_stems,
    run_settings,
    write_outputs,
)
from ovseg.results import INSTANCE_SCORE_THRESHOLD
from ovseg.video import DEFAULT_MAX_FRAMES, VIDEO_SUFFIXES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}


MIN_OUTPUT_PIXELS = 64 * 64


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
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


def process_image(predictor, image_path: Path, args, paths: dict, settings: dict, info) -> dict:

    from ovseg.apps.arguments import precision_record
    from ovseg.model_zoo import model_caveat
    from ovseg.preprocess import load_image

    image = load_image(image_path)
    outputs = {}  # path -> what to write there
    record = {"image": str(image_path)}
    if "labels" in paths:  # classes were named: segment too
        record = _segmentation(predictor, image, image_path, args, settings, paths, outputs)
    if args.heatmap:
        record["heatmaps"] = _heatmaps(predictor, image, args, settings, paths, outputs)
        if "labels" not in paths:
            size = predictor.output_size(*image.shape[:2])
            record |= {"image_size": list(image.shape[:2]), "output_size": list(size)}
            record |= {"task": "heatmap", "model": settings["model"]}
            caveat = model_caveat(settings["model"], args.heatmap)
            if caveat:
                record["model_caveat"] = caveat
    record["settings"] = settings
    record["precision"] = precision_record(predictor)
    outputs[paths["json"]] = record
    write_outputs(outputs)
    return record


def _segmentation(predictor, image, image_path, args, settings, paths, outputs) -> dict:
    """Segment one image (the task, prompts or SAM masks); its overlay and label map go into
    ``outputs``; returns its JSON record."""
    from ovseg.render import render

    task = "prompts" if args.prompts is not None else args.task
    if args.prompts is not None:
        result = predictor.segment_prompts(
            image, prompts=args.prompts, sam=args.sam_masks, short_side=args.short_side
        )
    elif args.sam_masks is not None:
        from ovseg.sam.segment import segment_automatic

        result = segment_automatic(
            predictor, image, args.sam_masks, tasks=(args.task,), short_side=args.short_side
        )
    else:
        result = predictor.predict(
            image, tasks=(args.task,), short_side=args.short_side, head=args.head
        )
    rendered = render(
        result,
        image,
        task,
        model=settings["model"],
        score_threshold=args.score_threshold,
        prompts=args.prompts,
        masks_from=None if args.sam_masks is None else args.sam_masks.name,
        head=args.head,
        image_name=str(image_path),
    )
    outputs[paths["overlay"]] = rendered.overlay
    outputs[paths["labels"]] = rendered.label_image()
    return rendered.record


def _heatmaps(predictor, image, args, settings, paths, outputs) -> list[dict]:
    """One relevancy heat map picture per ``--heatmap`` phrase into ``outputs``; returns their
    JSON entries (phrase, file, peak relevancy, share of pixels above 0.5)."""
    from ovseg.render import render_heatmaps

    maps = predictor.heatmap(image, args.heatmap, short_side=args.short_side)
    pictures = render_heatmaps(image, maps, args.heatmap, model=settings["model"])
    entries = []
    for index, (phrase, relevancy) in enumerate(zip(args.heatmap, maps, strict=True)):
        path = paths[f"heatmap {index}"]
        outputs[path] = pictures[index]
        entries.append(
            {
                "phrase": phrase,
                "file": path.name,
                "peak_relevancy": round(float(relevancy.max()), 4),
                "relevant_share": round(float((relevancy > 0.5).mean()), 4),
            }
        )
    return entries


def process_video(predictor, video_path: Path, args, paths: dict, settings: dict, info) -> dict:
    """NAME_overlay.mp4 and NAME_frames.json: each frame in the task, tracked thing ids."""
    from tqdm import tqdm

    from ovseg.apps.arguments import precision_record
    from ovseg.video import segment_video

    with tqdm(desc=video_path.name, unit="frame", file=sys.stderr, leave=False) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return segment_video(
            predictor,
            video_path,
            paths["overlay"].parent,
            task=args.task,
            score_threshold=args.score_threshold,
            head=args.head,
            max_frames=args.max_frames,
            short_side=args.short_side,
            progress=advance,
            stem=paths["json"].name.removesuffix("_frames.json"),
            extra={"settings": settings, "precision": precision_record(predictor)},
            info=info,
            model=settings["model"],
        )


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


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    args.prompts = args.sam_masks = None
    try:
        return run(args)
    except (UsageError, ValueError, FileNotFoundError, RuntimeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def _check_arguments(args) -> None:
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


def _plan(args, vocabulary, out_dir: Path) -> tuple[list, list, int, list]:
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


def run(args) -> int:
    from ovseg.apps.arguments import (
        load_predictor_from_arguments,
        load_sam_from_arguments,
        say_precision,
    )
    from ovseg.model_zoo import model_caveat
    from ovseg.threads import set_threads
    from ovseg.vocabulary import as_vocabulary, describe_guessed_kinds, parse_class_list

    _check_arguments(args)
    set_threads(args.threads)
    info = _join_torchrun(args)
    vocabulary = None  # heat maps only
    if args.classes is not None:
        vocabulary = parse_class_list(args.classes)
    elif args.vocab is not None:
        vocabulary = as_vocabulary(args.vocab)
    out_dir = Path(args.output)
    todo, bad, skipped, warnings = _plan(args, vocabulary, out_dir)
    if skipped and info.is_main:
        print(
            f"skipping {skipped} input(s) whose outputs exist, made with the same model, "
            "classes, task and sizes (--overwrite to redo)",
            file=sys.stderr,
        )
    if bad and not todo:
        if len(bad) == 1:
            raise UsageError(str(bad[0][1]))
        raise UsageError(f"none of the {len(bad)} inputs can be read (first: {bad[0][1]})")
    if info.enabled:  # under torchrun: every world_size-th input, the same plan on every rank
        todo = todo[info.rank :: info.world_size]
        bad = bad if info.is_main else []
    for _, error in bad:
        print(f"error: {error} (skipped)", file=sys.stderr)
    for line in warnings if info.is_main else []:
        print(line, file=sys.stderr)
    if not todo and not info.enabled:
        return 0
    created = check_writable(out_dir)
    try:
        if args.onnx is not None:
            from ovseg.export import OnnxPredictor

            predictor = OnnxPredictor(args.onnx, max_output_pixels=args.max_output_pixels)
            print(f"ovseg: ONNX Runtime, export {args.onnx}", file=sys.stderr)
        else:
            predictor = load_predictor_from_arguments(
                args, log=print, max_output_pixels=args.max_output_pixels
            )
            say_precision(predictor)
        _say_short_side_cap(predictor, args.short_side, info.is_main)
        args.sam_masks = load_sam_from_arguments(args, predictor.device)
        if args.prompts is not None and args.sam_masks is None:
            if predictor.model.prompt_head is None:
                raise UsageError(
                    f"model {predictor.model_name} has no prompt head for --points / --boxes: "
                    "add --masks sam (with SAM weights), or use a model with one (synthetic_tiny)"
                )
        if vocabulary is not None:
            predictor.set_vocabulary(vocabulary)
            kinds = describe_guessed_kinds(predictor.vocabulary)
            if kinds:
                print(f"ovseg: {kinds}", file=sys.stderr)
            caveat = model_caveat(predictor.model_name, predictor.vocabulary.classes)
            if caveat:
                print(f"ovseg: {caveat}", file=sys.stderr)
            _say_cut_class_names(predictor)
        failures = _segment_all(predictor, todo, args, info)
    finally:
        if created and not info.enabled and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that wrote nothing leaves no empty folder behind
    failures += len(bad)
    total = len(todo) + len(bad)
    if info.enabled:
        from ovseg.distributed import all_reduce_sum, cleanup

        failures = int(all_reduce_sum(failures, info))
        total = int(all_reduce_sum(total, info))
        cleanup(info)
    if failures:
        if info.is_main:
            print(f"{failures} of {total} input(s) failed", file=sys.stderr)
        return 1
    return 0


def _say_short_side_cap(predictor, short_side: int | None, is_main: bool) -> None:
    """One warning line when --short-side can never be reached: the model's long-side limit
    (``max_size_test``) caps every image below it."""
    longest = predictor.inference.max_size_test
    if short_side is not None and short_side > longest and is_main:
        print(
            f"ovseg: warning: --short-side {short_side} is above the model's long-side limit "
            f"of {longest} pixels: images are resized to {longest} on their long side (short "
            "side less)",
            file=sys.stderr,
        )


def _say_cut_class_names(predictor) -> None:
    """One warning line naming the class names too long for the text encoder's context
    (the tokenizer cuts them: only their first part is read)."""
    encoder = getattr(predictor, "text_encoder", None)
    if encoder is None:  # ONNX Runtime: its tokenizer cuts the same way, unsaid
        return
    cut = encoder.cut_texts(predictor.vocabulary.synonyms)
    if cut:
        names = ", ".join(f"'{name[:40]}...'" if len(name) > 40 else f"'{name}'" for name in cut)
        print(
            f"ovseg: warning: class name(s) {names} exceed the text encoder's "
            f"{encoder.backbone.text_context_length}-token context and are truncated: only "
            "their first part is read (shorten them)",
            file=sys.stderr,
        )


def _join_torchrun(args):
    """Under torchrun (WORLD_SIZE > 1): join the group, each process on its own device (GPU =
    local rank) and a share of the inputs; else a one-process :class:`DistInfo`."""
    import os

    from ovseg.distributed import DistInfo, init_distributed

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    if args.onnx is not None:
        raise UsageError("--onnx runs in one process: drop torchrun")
    info = init_distributed(args.device)
    args.device = str(info.device)
    return info


def _segment_all(predictor, todo: list, args, dist_info) -> int:
    """Segment every planned input; returns the number that failed. Ctrl-C stops cleanly:
    'interrupted: N of M done', exit 130 (every finished output is whole). Under torchrun
    only rank 0 shows its progress."""
    from tqdm import tqdm

    from ovseg.preprocess import ImageError
    from ovseg.video import VideoError

    failures = done = 0
    found = set()  # the classes shown in any output, for the summary of several inputs
    quiet = len(todo) == 1 or not dist_info.is_main
    bar = tqdm(todo, desc="segmenting", unit="file", disable=quiet, file=sys.stderr)
    try:
        for image_path, paths, settings, info in bar:
            is_video = image_path.suffix.lower() in VIDEO_SUFFIXES
            try:
                process = process_video if is_video else process_image
                record = process(predictor, image_path, args, paths, settings, info)
            except (ImageError, VideoError) as error:
                failures += 1
                bar.write(f"error: {error}", file=sys.stderr)
                continue
            done += 1
            found.update(s["class"] for s in record.get("segments", []) if s.get("shown", True))
            if len(todo) == 1 and not dist_info.enabled:
                print(_summary(image_path, record, paths), file=sys.stderr)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {done} of {len(todo)} done", file=sys.stderr)
        raise SystemExit(130) from None
    if len(todo) > 1 and not dist_info.enabled:
        classes = ", ".join(sorted(found)) or "nothing"
        print(
            f"{done} of {len(todo)} inputs segmented (found: {classes}) -> "
            f"{todo[0][1]['json'].parent}",
            file=sys.stderr,
        )
    return failures


def _summary(image_path: Path, record: dict, paths: dict) -> str:
    out_dir = paths["json"].parent
    if "per_frame" in record:
        return f"{image_path}: {record['frames']} frames -> {out_dir}"
    heat = ""
    if "heatmaps" in record:
        peaks = ", ".join(
            f"{h['phrase']!r} peak {h['peak_relevancy']:.2f}" for h in record["heatmaps"]
        )
        heat = f"heat maps: {peaks}"
        if "segments" not in record:
            return f"{image_path}: {heat} -> {out_dir}"
        heat = f"; {heat}"
    shown = [s for s in record["segments"] if s.get("shown", True)]
    found = ", ".join(sorted({s["class"] for s in shown})) or "nothing"
    hidden = len(record["segments"]) - len(shown)
    below = f"; {hidden} below --score-threshold in the JSON only" if hidden else ""
    return f"{image_path}: {len(shown)} segments ({found}{below}){heat} -> {out_dir}"
