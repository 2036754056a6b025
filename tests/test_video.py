"""Video through demo/predict.py: overlay MP4 + per-frame JSON, tracked ids, frame cap."""

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.apps.predict import main
from ovseg.video import probe, read_frames, write_mp4

TINY = ["--model", "fcclip_tiny_parity", "--short-side", "64"]


@pytest.fixture
def clip_path(tmp_path):
    frames = []
    for t in range(8):
        frame = np.full((48, 64, 3), 200, np.uint8)
        frame[10:22, 4 + 4 * t : 16 + 4 * t] = (220, 30, 30)  # a square moving right
        frames.append(frame)
    path = tmp_path / "moving.mp4"
    write_mp4(path, frames, fps=8)
    return path


def test_written_video_reads_back(clip_path):
    info = probe(clip_path)
    assert info["size"] == (64, 48) and info["fps"] == pytest.approx(8)
    frames = list(read_frames(clip_path, 100))
    assert len(frames) == 8 and frames[0].shape == (48, 64, 3)
    assert frames[0][15, 8, 0] > 150 and frames[0][15, 8, 1] < 100  # the red square survives


def test_cli_video_outputs(clip_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main([str(clip_path), "--classes", "square, background", "--output", str(out), *TINY]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["moving_frames.json", "moving_overlay.mp4"]
    record = json.loads((out / "moving_frames.json").read_text())
    assert record["frames"] == 8 and len(record["per_frame"]) == 8
    assert len(list(read_frames(out / "moving_overlay.mp4", 100))) == 8
    for frame in record["per_frame"]:
        for segment in frame["segments"]:
            assert ("track_id" in segment) == segment["isthing"]


def test_video_limits_and_bad_files(clip_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                str(clip_path),
                "--classes",
                "square",
                "--output",
                str(out),
                "--max-frames",
                "3",
                *TINY,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "limit is 3" in err and "\n" not in err  # refused before the model loads
    assert not out.exists()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 50)
    assert main([str(broken), "--classes", "square", "--output", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a video" in err and "\n" not in err
    assert not out.exists()


def variable_rate_clip(tmp_path, *extra):
    """30 frames: 29 at 10 frames/s, then the last one 2 s later (a pause): 4.9 s in all.
    ``extra`` ffmpeg output options (``-bf 0``: no B-frames, whose reordering leaves the MP4
    header's duration at 2.96 s, short of the last frame)."""
    import subprocess

    import imageio_ffmpeg

    folder = tmp_path / "vfr"
    folder.mkdir()
    lines = []
    for t in range(30):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[10:30, 4 + t : 20 + t] = (220, 30, 30)
        Image.fromarray(frame).save(folder / f"{t:03d}.png")
        lines += [f"file '{folder / f'{t:03d}.png'}'", f"duration {2.0 if t == 28 else 0.1}"]
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    clip = tmp_path / "paused.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "concat", "-safe", "0", "-i"]
        + [str(folder / "list.txt"), "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt"]
        + ["yuv420p", *extra, str(clip)],
        check=True,
    )
    return clip


def test_a_variable_frame_rate_video_is_read_as_the_frames_it_holds(tmp_path, capsys):
    """A 30-frame clip with a 2 s pause used to be read as a constant-rate stream (duplicated
    frames: 137 for the issue's clip), pass a --max-frames check it should fail, and stop at
    the limit silently with exit 0."""
    clip = variable_rate_clip(tmp_path)
    info = probe(clip)
    assert info["frames"] == 30 and len(list(read_frames(clip, 1000))) == 30
    assert info["times"][29] - info["times"][28] == pytest.approx(2.0, abs=0.05)
    out = tmp_path / "out"
    args = [str(clip), "--classes", "square", "--output", str(out), *TINY]
    assert main(args + ["--max-frames", "29"]) == 2  # 30 > 29: refused up front
    assert "30 frames" in capsys.readouterr().err
    assert main(args) == 0
    record = json.loads((out / "paused_frames.json").read_text())
    assert record["frames"] == 30 and len(record["per_frame"]) == 30
    times = [frame["time"] for frame in record["per_frame"]]
    assert times[29] - times[28] == pytest.approx(2.0, abs=0.05)
    overlay = probe(out / "paused_overlay.mp4")
    duration = overlay["times"][-1] - overlay["times"][0] + 1 / overlay["fps"]
    assert duration == pytest.approx(times[-1] - times[0] + 0.1, abs=0.25)  # timing kept


def header_duration(path) -> float:
    """The container's duration (s) as ffmpeg reports it (what players show)."""
    import re
    import subprocess

    import imageio_ffmpeg

    done = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True,
        text=True,
    )
    hours, minutes, seconds = re.search(r"Duration: (\d+):(\d+):([\d.]+)", done.stderr).groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@pytest.mark.parametrize("kind", ["slow_motion_240fps", "variable_rate"])
def test_the_overlay_lasts_as_long_as_the_source_whatever_the_rate(tmp_path, capsys, kind):
    """A 240 fps clip of 0.13 s gave a 0.50 s overlay (the rate was capped at 60 and every
    frame written at least once); a variable rate could stretch it too."""
    if kind == "variable_rate":
        clip = variable_rate_clip(tmp_path, "-bf", "0")
    else:
        clip = tmp_path / "slow.mp4"
        frames = [np.full((48, 64, 3), 8 * t, np.uint8) for t in range(31)]
        write_mp4(clip, frames, fps=240)
    source = probe(clip)
    frame = float(np.diff(source["times"]).min())  # the tolerance: the source's shortest frame
    expected = header_duration(clip)  # right for these clips (no B-frames)
    out = tmp_path / "out"
    assert main([str(clip), "--classes", "square", "--output", str(out), *TINY]) == 0
    overlay = out / f"{clip.stem}_overlay.mp4"
    assert header_duration(overlay) == pytest.approx(expected, abs=frame)
    assert probe(overlay)["duration"] == pytest.approx(expected, abs=frame)
    assert source["duration"] == pytest.approx(expected, abs=frame)


def test_the_video_json_and_overlay_carry_the_models_caveat(
    clip_path, tmp_path, capsys, monkeypatch
):
    """A random or toy model said so in image outputs only, not in the video JSON or under
    the overlay's legend; the frame-limit message now names --max-frames."""
    import ovseg.visualize

    notes = []
    original = ovseg.visualize.overlay

    def recording(image, segments, **kwargs):
        notes.append(kwargs.get("note"))
        return original(image, segments, **kwargs)

    monkeypatch.setattr(ovseg.visualize, "overlay", recording)
    out = tmp_path / "out"
    assert main([str(clip_path), "--classes", "square", "--output", str(out), *TINY]) == 0
    record = json.loads((out / "moving_frames.json").read_text())
    assert "RANDOM weights" in record["model_caveat"]
    assert len(notes) == 8 and all("RANDOM weights" in (note or "") for note in notes)
    assert main([str(clip_path), "--classes", "square", "--max-frames", "3", *TINY]) == 2
    assert "raise the limit with --max-frames" in capsys.readouterr().err


def test_a_batched_video_gives_the_frames_of_one_at_a_time(clip_path, tmp_path, capsys):
    """Frames decoded ahead, drawn in another thread and encoded four at a time: the same
    segments, track ids and overlay frames as one frame at a time."""
    args = [str(clip_path), "--classes", "square, background", *TINY, "--precision", "fp32"]
    assert main([*args, "--output", str(tmp_path / "one")]) == 0
    assert main([*args, "--output", str(tmp_path / "four"), "--batch-size", "4"]) == 0
    one, four = (
        json.loads((tmp_path / d / "moving_frames.json").read_text()) for d in ("one", "four")
    )
    for a, b in zip(one["per_frame"], four["per_frame"], strict=True):
        assert [(s["class"], s.get("track_id"), s["area"]) for s in a["segments"]] == [
            (s["class"], s.get("track_id"), s["area"]) for s in b["segments"]
        ]
    frames = [list(read_frames(tmp_path / d / "moving_overlay.mp4", 100)) for d in ("one", "four")]
    assert all(np.array_equal(x, y) for x, y in zip(*frames, strict=True))


def test_read_ahead_keeps_order_and_raises_the_producers_error():
    from ovseg.video import read_ahead

    assert list(read_ahead(iter(range(10)), depth=2)) == list(range(10))

    def broken():
        yield 1
        raise ValueError("frame 2 is damaged")

    with pytest.raises(ValueError, match="frame 2 is damaged"):
        list(read_ahead(broken()))
