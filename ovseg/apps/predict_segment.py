"""``ovseg predict``'s work on each planned input: an image (segmentation, prompts or SAM
masks, heat maps) or a video, drawn and recorded through :func:`ovseg.render.render` and
written whole; the progress bar, Ctrl-C and the summary lines."""

from __future__ import annotations

import sys
from pathlib import Path

from ovseg.apps.outputs import write_outputs
from ovseg.video import VIDEO_SUFFIXES


def process_image(
    predictor, image_path: Path, args, paths: dict, settings: dict, info, *, image=None, write=None
) -> dict:
    """One image's outputs (overlay, labels, heat maps, JSON), written together by ``write``
    (default: now; the folder loop hands them to a writer thread); returns its JSON record.
    ``image``: the decoded image when it was read ahead."""
    from ovseg.apps.arguments import precision_record
    from ovseg.model_zoo import model_caveat
    from ovseg.preprocess import load_image

    image = load_image(image_path) if image is None else image
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
    (write or write_outputs)(outputs)
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
            batch_size=args.batch_size,
            progress=advance,
            stem=paths["json"].name.removesuffix("_frames.json"),
            extra={"settings": settings, "precision": precision_record(predictor)},
            info=info,
            model=settings["model"],
        )


def segment_all(predictor, todo: list, args, dist_info) -> int:
    """Segment every planned input; returns the number that failed. Ctrl-C stops cleanly:
    'interrupted: N of M done', exit 130 (every finished output is whole). Under torchrun
    only rank 0 shows its progress.

    Images flow through three stages at once: a reader thread decodes the next
    ``--batch-size`` images while the network runs, the network encodes them together where
    they resize alike (:meth:`~ovseg.predictor_base.PredictorBase.encode_many`), and a writer
    thread encodes and writes the finished outputs. The outputs are those of one image at a
    time."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from ovseg.preprocess import ImageError
    from ovseg.video import VideoError

    failures = done = 0
    found = set()  # the classes shown in any output, for the summary of several inputs
    quiet = len(todo) == 1 or not dist_info.is_main
    bar = tqdm(total=len(todo), desc="segmenting", unit="file", disable=quiet, file=sys.stderr)
    batch_size = max(1, args.batch_size)
    predictor.feature_cache_size = max(predictor.feature_cache_size, batch_size)
    writes = []
    try:
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
            chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
            loading = _read_ahead(reader, chunks[0]) if chunks else []
            for position, chunk in enumerate(chunks):
                images = [future.result() for future in loading]  # (image or error) each
                if position + 1 < len(chunks):
                    loading = _read_ahead(reader, chunks[position + 1])
                _encode_together(predictor, images, args, batch_size)
                for (image_path, paths, settings, info), image in zip(chunk, images, strict=True):
                    bar.update(1)
                    is_video = image_path.suffix.lower() in VIDEO_SUFFIXES
                    try:
                        if isinstance(image, Exception):
                            raise image
                        if is_video:
                            record = process_video(
                                predictor, image_path, args, paths, settings, info
                            )
                        else:
                            record = process_image(
                                predictor,
                                image_path,
                                args,
                                paths,
                                settings,
                                info,
                                image=image,
                                write=lambda outputs: writes.append(
                                    writer.submit(write_outputs, outputs)
                                ),
                            )
                    except (ImageError, VideoError) as error:
                        failures += 1
                        bar.write(f"error: {error}", file=sys.stderr)
                        continue
                    done += 1
                    shown = record.get("segments", [])
                    found.update(s["class"] for s in shown if s.get("shown", True))
                    if len(todo) == 1 and not dist_info.enabled:
                        print(_summary(image_path, record, paths), file=sys.stderr)
        for future in writes:
            future.result()  # a failed write raises here, after the others finished
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {done} of {len(todo)} done", file=sys.stderr)
        raise SystemExit(130) from None
    bar.close()
    if len(todo) > 1 and not dist_info.enabled:
        classes = ", ".join(sorted(found)) or "nothing"
        print(
            f"{done} of {len(todo)} inputs segmented (found: {classes}) -> "
            f"{todo[0][1]['json'].parent}",
            file=sys.stderr,
        )
    return failures


def _read_ahead(reader, chunk: list) -> list:
    """Futures of the chunk's decoded images (None for a video; the ImageError itself for
    an image that cannot be read, raised when its turn comes)."""

    def read(path: Path):
        from ovseg.preprocess import ImageError, load_image

        if path.suffix.lower() in VIDEO_SUFFIXES:
            return None
        try:
            return load_image(path)
        except ImageError as error:
            return error

    return [reader.submit(read, image_path) for image_path, *_ in chunk]


def _encode_together(predictor, images: list, args, batch_size: int) -> None:
    """Encode a chunk's readable images in batches (cached for the per-image steps), where
    the per-image steps run the plain image network: not for prompts, SAM masks or heat
    maps alone."""
    arrays = [image for image in images if image is not None and not isinstance(image, Exception)]
    plain = args.prompts is None and args.sam_masks is None
    plain = plain and (args.classes is not None or args.vocab is not None)
    if batch_size > 1 and len(arrays) > 1 and plain:
        predictor.encode_many(arrays, short_side=args.short_side, batch_size=batch_size)


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
