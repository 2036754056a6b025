"""The 4D parts of ``ovseg fields``: the synthetic dynamic world, fitting a multi-view video,
and time-agnostic / time-sensitive queries with per-frame heat maps, masks and a video."""

from __future__ import annotations

import json
from pathlib import Path


def add_world4d_parser(commands) -> None:
    world = commands.add_parser(
        "world4d", help="write synthetic dynamic scenes (multi-view video with times, captions)"
    )
    world.add_argument("out", help="folder for scene_000, scene_001, ...")
    world.add_argument("--scenes", type=int, default=1)
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--steps", type=int, default=24, help="time steps (20-60 in the paper)")
    world.add_argument("--train-cameras", type=int, default=6)
    world.add_argument("--test-cameras", type=int, default=2)
    world.add_argument("--size", default="160x128", help="frame size WxH")


def add_fit4d_arguments(fit) -> None:
    group = fit.add_argument_group("dynamic scenes (frames with times)")
    group.add_argument(
        "--captions",
        help="captions of the objects' states (default: "
        "SCENE/captions.json when there); see ovseg.fields.captions",
    )
    group.add_argument("--status-iterations", type=int, default=400)
    group.add_argument(
        "--time-slices",
        type=int,
        default=2,
        help="Spacetime Gaussians: start from this many copies of the points, "
        "each living in its share of the video (0: one canonical cloud that "
        "only the deformation network moves)",
    )
    group.add_argument(
        "--sentence-model",
        default="all-MiniLM-L6-v2",
        help="sentence-transformers model for the captions",
    )


def add_query4d_arguments(query) -> None:
    group = query.add_argument_group("4D fields")
    group.add_argument(
        "--time",
        type=float,
        action="append",
        help="a time in the scene's unit (repeatable; default: every frame time of the scene)",
    )
    group.add_argument(
        "--time-range",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        help="the scene's frame times from START to END (both inside the video), instead of --time",
    )
    group.add_argument(
        "--state",
        action="append",
        help="a time-sensitive query ('a red star'): the frames where it holds "
        "and its masks there (repeatable)",
    )
    group.add_argument("--video", action="store_true", help="also an MP4 per query over time")


def world4d(args) -> int:
    from ovseg.synthetic.world4d import write_scene4d

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be WxH, e.g. 160x128, got '{args.size}'") from None
    if args.scenes < 1 or args.steps < 2 or args.train_cameras < 1 or args.test_cameras < 0:
        raise ValueError("--scenes >= 1, --steps >= 2, --train-cameras >= 1, please")
    if width < 32 or height < 32:
        raise ValueError("--size must be at least 32x32")
    for index in range(args.scenes):
        out = write_scene4d(
            Path(args.out) / f"scene_{index:03d}",
            args.seed,
            index,
            train_cameras=args.train_cameras,
            test_cameras=args.test_cameras,
            steps=args.steps,
            width=width,
            height=height,
            progress=True,
        )
        print(f"wrote {out}")
    return 0


def check_fit4d_extras(args) -> None:
    """ValueError when the scene has captions (--captions or SCENE/captions.json) and the
    sentence encoder they need (the fields4d extra) is not installed."""
    import importlib.util

    from ovseg.fields.sentences import INSTALL_HINT

    captions = args.captions or (Path(args.scene) / "captions.json").is_file()
    if captions and importlib.util.find_spec("sentence_transformers") is None:
        raise ValueError(f"the scene's state captions need a sentence encoder: {INSTALL_HINT}")


def fit4d(args, predictor) -> int:
    from ovseg.fields.field4d import Field4DConfig, fit_field4d
    from ovseg.fields.fit import LatentFitConfig, colour_config

    if args.status_iterations < 1:
        raise ValueError("--status-iterations must be >= 1")
    if args.time_slices < 0:
        raise ValueError("--time-slices must be >= 0")
    cfg = Field4DConfig(
        time_slices=args.time_slices,
        colour=colour_config(args.iterations),
        language=LatentFitConfig(iterations=args.language_iterations),
        status=LatentFitConfig(iterations=args.status_iterations),
        image_scale=args.scale,
        mask_vocabulary=args.mask_vocabulary,
        sentence_model=args.sentence_model,
    )
    meta = fit_field4d(
        args.scene,
        args.out,
        predictor,
        cfg,
        captions_path=args.captions,
        progress=not args.no_progress,
    )
    total = sum(meta["timings_s"].values())
    captions = "with" if meta["captions"] else "without"
    print(
        f"fitted {args.out} (4D): {meta['gaussians']} Gaussians, colour loss "
        f"{meta['colour_loss']:.4f}, latent L1 {meta['language_loss']:.4f}, "
        f"{captions} captions, {total / 60:.1f} min"
    )
    return 0


def query4d(args, text_model, phrases: list[str]) -> int:
    """``fields query`` of a 4D field; ``text_model``: the model's text half
    (:class:`ovseg.predictor.TextModel`; an OVSegPredictor does too)."""
    from ovseg.apps.outputs import slug
    from ovseg.fields.field4d import DynamicField
    from ovseg.fields.posed_images import view_file_stem
    from ovseg.heatmap import check_phrases

    field = DynamicField.load(args.field, text_model)
    scene = field.scene()
    states = check_phrases(args.state) if args.state else []
    times = args.time or sorted(set(scene.times))
    if args.time_range is not None:
        times = _times_in_range(field, scene, args.time, args.time_range)
    for t in times:
        field.normalise(t)  # a time outside the video fails before anything is written
    times = list(dict.fromkeys(times))
    labels: dict[str, float] = {}
    for t in times:  # times name files (VIEW_1phrase_t0.5_mask.png): one name, one time
        if labels.setdefault(f"{t:g}", t) != t:
            raise ValueError(
                f"times {labels[f'{t:g}']!r} and {t!r} would write the same files "
                f"(t{t:g}); give times that differ within 6 digits"
            )
    # a camera by its id (its pose at its first frame) or by a frame's name
    by_name = {camera.name: camera for camera in scene.cameras}
    for camera, camera_id in zip(scene.cameras, scene.camera_ids, strict=True):
        by_name.setdefault(camera_id, camera)
    trained = {scene.camera_ids[i] for i in scene.split("train")}
    held_out = [c for c in dict.fromkeys(scene.camera_ids) if c not in trained]
    names = args.view or [held_out[0] if held_out else scene.camera_ids[0]]
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"no view named {', '.join(unknown)} in {field.meta['scene']}")
    out = Path(args.out)
    written = 0
    for name in names:
        camera = by_name[name]
        if args.size is not None:
            camera = camera.scaled(args.size / camera.width)
        rendered = [field.render(camera, t) for t in times]  # one render a time serves all
        renders = [_rgb(r["rgb"]) for r in rendered]
        for number, phrase in enumerate(phrases, 1):
            stem = out / f"{view_file_stem(name)}_{number}{slug(phrase)}"
            written += _agnostic_outputs(
                field, camera, times, rendered, renders, phrase, stem, args.video
            )
        for number, state in enumerate(states, 1):
            stem = out / f"{view_file_stem(name)}_state{number}{slug(state)}"
            written += _state_outputs(field, camera, times, renders, state, stem, args.video)
    print(f"wrote {written} files for {len(names)} view(s) and {len(times)} time(s) to {out}")
    return 0


def _times_in_range(field, scene, times, time_range) -> list[float]:
    """The scene's frame times in [start, end]; ValueError with --time, for a reversed range,
    an end outside the video, or a range with no frame in it."""
    if times:
        raise ValueError("--time and --time-range: give one of them")
    start, end = time_range
    if start > end:
        raise ValueError(f"--time-range {start:g} {end:g}: the start is after the end")
    for t in (start, end):
        field.normalise(t)
    inside = sorted({t for t in scene.times if start <= t <= end})
    if not inside:
        frames = ", ".join(f"{t:g}" for t in sorted(set(scene.times)))
        raise ValueError(f"no frame between {start:g} and {end:g}; the frames are at {frames}")
    return inside


def _rgb(tensor):
    import numpy as np

    return (tensor.numpy() * 255).round().astype(np.uint8)


def _save_png(path: Path, picture) -> None:
    from PIL import Image

    from ovseg.fileio import atomic_write

    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _agnostic_outputs(
    field, camera, times, rendered, renders, phrase, stem: Path, video: bool
) -> int:
    """Per time a heat map and a mask (relevancy > 0.5) of ``phrase`` (``rendered``: the
    field's renders, ``renders`` their RGB as uint8); with ``video`` an MP4 of the heat maps.
    Returns the number of files written."""
    import numpy as np

    from ovseg.visualize import draw_heatmap

    pictures = []
    for t, render, rgb in zip(times, rendered, renders, strict=True):
        scores = field.relevancy(camera, t, [phrase], rendered=render)[0].numpy()
        picture = draw_heatmap(rgb, scores, phrase, note=f"t = {t:g}")
        pictures.append(np.asarray(picture))
        _save_png(stem.with_name(f"{stem.name}_t{t:g}_heatmap.png"), picture)
        _save_png(
            stem.with_name(f"{stem.name}_t{t:g}_mask.png"), ((scores > 0.5) * 255).astype(np.uint8)
        )
    if video:
        _video(stem.with_suffix(".mp4"), pictures)
    return 2 * len(times) + int(video)


def _state_outputs(field, camera, times, renders, state, stem: Path, video: bool) -> int:
    """When ``state`` holds (a JSON of per-frame scores), its masks in those frames; with
    ``video`` an MP4 of the masks over time. Returns the number of files written."""
    import numpy as np

    from ovseg.fileio import write_text_atomic
    from ovseg.visualize import mask_overlay

    answer = field.when(camera, times, state)
    holds = [bool(h) for h in answer["holds"]]
    holds_at = [t for t, h in zip(times, holds, strict=True) if h]
    scores = [round(float(s), 4) for s in answer["scores"]]
    record = {
        "state": state,
        "view": camera.name,
        "times": times,
        "holds": holds,
        "scores": scores,
        "holds_at": holds_at,
    }
    write_text_atomic(stem.with_suffix(".json"), json.dumps(record, indent=1))
    pictures, written = [], 1
    for t, rgb, mask, held in zip(times, renders, answer["masks"], holds, strict=True):
        mask = mask.numpy()
        caption = f"'{state}' at t = {t:g}: {'holds' if held else 'no'}"
        pictures.append(mask_overlay(rgb, mask, caption))
        if held:
            _save_png(stem.with_name(f"{stem.name}_t{t:g}_mask.png"), (mask * 255).astype(np.uint8))
            written += 1
    if video:
        _video(stem.with_suffix(".mp4"), pictures)
        written += 1
    when = ", ".join(f"{t:g}" for t in holds_at) or "no frame"
    print(f"'{state}' seen from {camera.name}: holds at {when}")
    return written


def _video(path: Path, pictures) -> None:
    import numpy as np

    from ovseg.video import write_mp4

    height = max(p.shape[0] for p in pictures)
    width = max(p.shape[1] for p in pictures)
    frames = [
        np.pad(p, ((0, height - p.shape[0]), (0, width - p.shape[1]), (0, 0)), constant_values=255)
        for p in pictures
    ]
    write_mp4(path, frames, fps=4.0)
