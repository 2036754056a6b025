"""Video segmentation: every frame with the same vocabulary, thing instances tracked across
frames (ovseg.tracking), an overlay MP4 (H.264) and a per-frame JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ovseg.fileio import atomic_write, write_text_atomic

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
DEFAULT_MAX_FRAMES = 300


class VideoError(ValueError):
    """A video that cannot be used; the message says why."""


def probe(path: str | Path) -> dict:
    """{"size": (W, H), "fps": float, "frames": int (estimated)} of a video file."""
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
    fps = float(meta.get("fps") or 0) or 25.0
    frames = int(round(float(meta.get("duration") or 0) * fps))
    return {"size": tuple(meta["size"]), "fps": fps, "frames": frames}


def check_frame_limit(path: Path, info: dict, max_frames: int) -> None:
    """VideoError when the probed video (``info`` from :func:`probe`) is above the limit."""
    if info["frames"] > max_frames:
        raise VideoError(
            f"{Path(path).name} has about {info['frames']} frames; the limit is "
            f"{max_frames}: trim the video or raise the frame limit"
        )


def read_frames(path: str | Path, max_frames: int):
    """Yield (H, W, 3) uint8 RGB frames, at most ``max_frames``."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    try:
        for index, raw in enumerate(reader):
            if index >= max_frames:
                break
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """H.264 MP4 (browser-playable), written atomically; odd sizes are padded to even."""
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
        for frame in frames:
            padded = np.pad(frame, ((0, even_h - height), (0, even_w - width), (0, 0)))
            writer.send(np.ascontiguousarray(padded).tobytes())
        writer.close()

    atomic_write(path, write)


def _track_frame(tracker, segments: list[dict], frame_hw: tuple[int, int]) -> None:
    """Give each thing segment of a frame its ``track_id`` (kept across frames)."""
    things = [s for s in segments if s["isthing"]]
    ids = tracker.update(
        np.stack([s["mask"] for s in things]) if things else np.zeros((0, *frame_hw), bool),
        np.array([s["class_id"] for s in things], dtype=np.int64),
    )
    for segment, track_id in zip(things, ids, strict=True):
        segment["track_id"] = track_id


def _draw_frame(frame: np.ndarray, segments: list[dict], colours: np.ndarray) -> np.ndarray:
    """The overlay of one frame: things coloured by track, stuff by class."""
    from ovseg.visualize import overlay

    shown = [
        {
            "mask": s["mask"],
            "label": f"{s['class']} #{s['track_id']}" if s["isthing"] else s["class"],
            "color": colours[(s["track_id"] + 7 if s["isthing"] else s["class_id"]) % 64],
        }
        for s in segments
    ]
    return np.asarray(overlay(frame, shown))


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
    max_frames: int = DEFAULT_MAX_FRAMES,
    short_side: int | None = None,
    progress=None,
    stem: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Panoptic segmentation of every frame with the predictor's current vocabulary.

    Things carry a ``track_id`` that stays with the object across frames. Writes
    ``STEM_overlay.mp4`` and ``STEM_frames.json`` into ``out_dir`` (both or neither; ``stem``
    defaults to the video's file stem; ``extra`` fields are added to the JSON record).
    ``progress(done, total)`` is called after each frame. Returns the JSON record.
    Raises VideoError for an unreadable, empty or too long video.
    """
    from ovseg.results import describe, segment_records
    from ovseg.tracking import IoUTracker
    from ovseg.visualize import palette

    path, out_dir = Path(path), Path(out_dir)
    info = probe(path)
    check_frame_limit(path, info, max_frames)
    tracker = IoUTracker()
    colours = palette(64)
    drawn, records = [], []
    for index, frame in enumerate(read_frames(path, max_frames)):
        result = predictor.predict(frame, tasks=("panoptic",), short_side=short_side)
        _, segments = describe(result, "panoptic")
        _track_frame(tracker, segments, frame.shape[:2])
        drawn.append(_draw_frame(frame, segments, colours))
        records.append({"frame": index, "segments": segment_records(segments)})
        if progress is not None:
            progress(index + 1, max(info["frames"], index + 1))
    if not drawn:
        raise VideoError(f"{path.name} has no frames")
    record = {
        "video": str(path),
        "fps": info["fps"],
        "frames": len(records),
        "classes": predictor.vocabulary.names,
        "per_frame": records,
    } | (extra or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or path.stem
    video_path = out_dir / f"{stem}_overlay.mp4"
    json_path = out_dir / f"{stem}_frames.json"
    write_mp4(video_path, _pad_to_largest(drawn), info["fps"])
    try:
        write_text_atomic(json_path, json.dumps(record, ensure_ascii=False))
    except BaseException:
        video_path.unlink(missing_ok=True)
        raise
    record["outputs"] = [str(video_path), str(json_path)]
    return record
