"""Video segmentation: every frame with the same vocabulary, thing instances tracked across
frames (ovseg.tracking), an overlay MP4 (H.264) and a per-frame JSON."""

from __future__ import annotations

import bisect
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue
from threading import Thread

import numpy as np

from ovseg.fileio import atomic_write, write_text_atomic

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
DEFAULT_MAX_FRAMES = 300


class VideoError(ValueError):
    """A video that cannot be used; the message says why."""


def frame_times(path: str | Path) -> tuple[list[float], float | None]:
    """Presentation time (s) of every frame the file holds, and the last frame's duration (s,
    None when the file gives none), from ffmpeg's ``showinfo`` filter (one decode pass). A
    variable-frame-rate file keeps its own frames and times: nothing is duplicated to a
    constant rate. Raises VideoError when ffmpeg cannot read it."""
    import subprocess

    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    command += ["-map", "0:v:0", "-fps_mode", "passthrough", "-vf", "showinfo", "-f", "null", "-"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace")
    except OSError as error:
        raise VideoError(f"{Path(path).name}: ffmpeg could not run ({error})") from error
    times = [float(t) for t in _PTS_TIME.findall(done.stderr)]
    if done.returncode != 0 and not times:
        raise VideoError(f"{Path(path).name} is not a video ffmpeg can read")
    durations = [float(d) for d in _DURATION_TIME.findall(done.stderr)]
    last = durations[-1] if len(durations) == len(times) and durations[-1] > 0 else None
    return times, last


_PTS_TIME = re.compile(r"\] n:\s*\d+ pts:\s*-?\d+\s+pts_time:(-?[\d.]+)")
_DURATION_TIME = re.compile(r"\] n:\s*\d+ pts:.*?duration_time:([\d.]+)")


def probe(path: str | Path) -> dict:
    """{"size": (W, H), "fps": float (the stream's nominal rate), "frames": int, "times": [s],
    "duration": s} of a video file: the frames and their times are those the file holds
    (variable frame rates included); the duration runs from the first frame to the end of the
    last (its own duration, else one nominal period), not the container's header, which
    B-frames in a variable-rate MP4 can leave short of the last frame. Raises VideoError for a
    missing or unreadable file."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (RuntimeError, OSError, StopIteration) as error:
        raise VideoError(f"{path} is not a video ffmpeg can read") from error
    times, last_duration = frame_times(path)
    fps = float(meta.get("fps") or 0) or 25.0
    duration = times[-1] - times[0] + (last_duration or 1 / fps) if times else 0.0
    return {
        "size": tuple(meta["size"]),
        "fps": fps,
        "frames": len(times),
        "times": times,
        "duration": duration,
    }


def check_frame_limit(path: Path, info: dict, max_frames: int) -> None:
    """VideoError when the probed video (``info`` from :func:`probe`) is above the limit."""
    if info["frames"] > max_frames:
        raise VideoError(
            f"{Path(path).name} has about {info['frames']} frames; the limit is "
            f"{max_frames}: trim the video or raise the limit with --max-frames"
        )


def read_frames(path: str | Path, max_frames: int):
    """Yield (H, W, 3) uint8 RGB frames, the ones the file holds (never duplicated to a
    constant rate), at most ``max_frames``."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(
        str(path), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"]
    )
    meta = next(reader)
    width, height = meta["size"]
    try:
        for index, raw in enumerate(reader):
            if index >= max_frames:
                break
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


MAX_OVERLAY_FPS = 240  # a faster source shares ticks: some frames are not shown, none slowed


def overlay_rate(info: dict) -> int:
    """The overlay's constant, whole rate for a probed video: its nominal rate, or its mean
    rate if higher, within 1..MAX_OVERLAY_FPS."""
    mean = info["frames"] / info["duration"] if info.get("duration") else 0.0
    return int(min(max(round(info["fps"]), math.ceil(mean - 1e-6), 1), MAX_OVERLAY_FPS))


def overlay_repeats(times: list[float], duration: float, fps: int) -> list[int]:
    """How many times to write each frame at a constant ``fps`` so that the overlay keeps the
    source's timing: round(duration x fps) ticks (the source's ``duration`` within half a
    tick), each showing the frame the source shows at the tick's middle. Pauses are held;
    frames closer together than a tick may be written 0 times."""
    ticks = max(1, round(duration * fps))
    starts = [t - times[0] for t in times]
    counts = [0] * len(times)
    for tick in range(ticks):
        counts[max(0, bisect.bisect_right(starts, (tick + 0.5) / fps) - 1)] += 1
    return counts


def write_mp4(
    path: Path, frames: list[np.ndarray], fps: float, *, repeats: list[int] | None = None
) -> None:
    """H.264 MP4 (browser-playable), written atomically; odd sizes are padded to even.
    ``repeats``: how many times each frame is written (default once; 0 skips it)."""
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    even_h, even_w = height + height % 2, width + width % 2

    def write(tmp: str) -> None:
        writer = imageio_ffmpeg.write_frames(
            tmp,
            (even_w, even_h),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            output_params=["-f", "mp4"],
        )
        writer.send(None)
        for frame, count in zip(frames, repeats or [1] * len(frames), strict=True):
            padded = np.pad(frame, ((0, even_h - height), (0, even_w - width), (0, 0)))
            data = np.ascontiguousarray(padded).tobytes()
            for _ in range(count):
                writer.send(data)
        writer.close()

    atomic_write(path, write)


def read_ahead(items, depth: int = 4):
    """Iterate ``items`` (a generator: decoded frames) in a thread, up to ``depth`` ahead of
    the consumer; an error raised by ``items`` is raised to the consumer in its turn."""
    done = object()
    queue: Queue = Queue(maxsize=depth)

    def produce() -> None:
        try:
            for item in items:
                queue.put(item)
        except BaseException as error:  # handed to the consumer, raised there
            queue.put(error)
        queue.put(done)

    Thread(target=produce, daemon=True).start()
    while (item := queue.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def _chunks(items, size: int):
    """Lists of up to ``size`` consecutive items."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pad_to_largest(pictures: list[np.ndarray]) -> list[np.ndarray]:
    """Legends differ between frames: pad every frame (white) to the largest one."""
    width = max(p.shape[1] for p in pictures)
    height = max(p.shape[0] for p in pictures)
    return [
        np.pad(p, ((0, height - p.shape[0]), (0, width - p.shape[1]), (0, 0)), constant_values=255)
        for p in pictures
    ]


def segment_video(
    predictor,
    path: str | Path,
    out_dir: str | Path,
    *,
    task: str = "panoptic",
    score_threshold: float | None = None,
    head: str = "fcclip",
    max_frames: int = DEFAULT_MAX_FRAMES,
    short_side: int | None = None,
    batch_size: int = 1,
    progress=None,
    stem: str | None = None,
    extra: dict | None = None,
    info: dict | None = None,
    model: str | None = None,
) -> dict:
    """Segment every frame with the predictor's current vocabulary in ``task`` (panoptic,
    semantic or instance), each frame drawn and recorded as an image is
    (:func:`ovseg.render.render`).

    Things carry a ``track_id`` that stays with the object across frames (panoptic things,
    instances scoring at least ``score_threshold``, default
    :data:`ovseg.results.INSTANCE_SCORE_THRESHOLD`; semantic segments are classes). Writes
    ``STEM_overlay.mp4`` and ``STEM_frames.json`` into ``out_dir`` (both or neither; ``stem``
    defaults to the video's file stem; ``extra`` fields are added to the JSON record; ``info``:
    the file's :func:`probe`, when the caller has it already; ``model``: its name, for the
    note under each frame's legend and a toy or random model's ``model_caveat`` in the JSON;
    default the predictor's; ``head``: see :meth:`ovseg.predictor.OVSegPredictor.predict`).
    ``progress(done, total)`` is called after each frame. Frames are decoded ahead in one
    thread and drawn in another while the network runs; ``batch_size`` frames are encoded
    together (:meth:`~ovseg.predictor_base.PredictorBase.encode_many`). Returns the JSON
    record. Raises VideoError for an unreadable, empty or too long video.
    """
    from ovseg.model_zoo import model_caveat
    from ovseg.render import render
    from ovseg.results import INSTANCE_SCORE_THRESHOLD
    from ovseg.tracking import IoUTracker

    path, out_dir = Path(path), Path(out_dir)
    info = info or probe(path)
    model = model or predictor.model_name
    caveat = model_caveat(model, predictor.vocabulary.classes)
    if score_threshold is None:
        score_threshold = INSTANCE_SCORE_THRESHOLD
    check_frame_limit(path, info, max_frames)
    tracker = IoUTracker()
    drawn, records = [], []

    def draw(index: int, frame: np.ndarray, result: dict) -> None:
        # one drawing thread, frames in order: the tracker sees them as one loop would
        rendered = render(
            result,
            frame,
            task,
            model=model,
            score_threshold=score_threshold,
            head=head,
            tracker=tracker,
        )
        drawn.append(np.asarray(rendered.overlay))
        time = info["times"][index] if index < len(info["times"]) else None
        records.append({"frame": index, "time": time, "segments": rendered.record["segments"]})

    predictor.feature_cache_size = max(predictor.feature_cache_size, batch_size)
    done = 0
    with ThreadPoolExecutor(1) as drawer:
        drawing = []
        for chunk in _chunks(read_ahead(read_frames(path, max_frames)), batch_size):
            if len(chunk) > 1 and head == "fcclip":
                predictor.encode_many(chunk, short_side=short_side, batch_size=batch_size)
            for frame in chunk:
                result = predictor.predict(frame, tasks=(task,), short_side=short_side, head=head)
                drawing.append(drawer.submit(draw, done, frame, result))
                done += 1
                if progress is not None:
                    progress(done, max(info["frames"], done))
        for future in drawing:
            future.result()  # a drawing error raises here
    if not drawn:
        raise VideoError(f"{path.name} has no frames")
    record = {
        "video": str(path),
        "task": task,
        "fps": info["fps"],
        "frames": len(records),
        "classes": predictor.vocabulary.names,
        "per_frame": records,
    } | (extra or {})
    if caveat:
        record["model_caveat"] = caveat
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or path.stem
    video_path = out_dir / f"{stem}_overlay.mp4"
    json_path = out_dir / f"{stem}_frames.json"
    # The overlay keeps the source's timing (and duration) at a whole rate: exact timestamps.
    fps = overlay_rate(info)
    times = [r["time"] for r in records]
    repeats = None
    if None not in times:
        whole = len(records) == info["frames"] and info.get("duration")
        duration = info["duration"] if whole else times[-1] - times[0] + 1 / info["fps"]
        repeats = overlay_repeats(times, duration, fps)
    write_mp4(video_path, _pad_to_largest(drawn), float(fps), repeats=repeats)
    try:
        write_text_atomic(json_path, json.dumps(record, ensure_ascii=False))
    except BaseException:
        video_path.unlink(missing_ok=True)
        raise
    record["outputs"] = [str(video_path), str(json_path)]
    return record
