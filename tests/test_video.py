"""Video through demo/predict.py: overlay MP4 + per-frame JSON, tracked ids, frame cap."""

import json

import numpy as np
import pytest

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
