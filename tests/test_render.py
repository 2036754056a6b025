"""One output step (ovseg.render): the command line, the web demo and video draw, resize and
record a result the same way. The web demo resized bicubic where predict resized bilinear,
and a video frame above --max-output-pixels could not be drawn at all."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_main
from ovseg.apps.predict import main
from ovseg.video import read_frames, write_mp4

# 96x128 -> 55x73; fp32 and one thread, as the predictor the test builds for the web demo
SMALL = ["--model", "fcclip_tiny_parity", "--max-output-pixels", "4096"]
SMALL += ["--precision", "fp32", "--threads", "1"]
CLI_ONLY = ("image", "settings", "precision")  # what only the command line's JSON records


@pytest.fixture
def photo(tmp_path):
    array = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def demo(one_thread):
    from ovseg.apps.web import Demo
    from ovseg.predictor import load_predictor

    predictor = load_predictor("fcclip_tiny_parity", device="cpu", max_output_pixels=4096)
    demo = Demo(predictor, model_note="test")
    yield demo
    demo.close()


@pytest.mark.parametrize("task", ["panoptic", "semantic", "instance"])
def test_the_web_demo_shows_and_writes_what_predict_writes(photo, tmp_path, demo, task, capsys):
    from ovseg.apps.web import TYPED
    from ovseg.preprocess import load_image

    classes = "cat, sky, grass, thing:box"
    out = tmp_path / "out"
    code, _, err = run_main(
        main, [photo, "--classes", classes, "--task", task, "--output", out, *SMALL], capsys
    )
    assert code == 0, err
    overlay, rows, labels, record, _ = demo.segment_image(
        load_image(photo), classes, TYPED, task, name="photo"
    )
    cli_overlay = np.asarray(Image.open(out / "photo_overlay.png").convert("RGB"))
    assert overlay.shape == cli_overlay.shape
    np.testing.assert_array_equal(overlay, cli_overlay)
    np.testing.assert_array_equal(
        np.asarray(Image.open(labels)), np.asarray(Image.open(out / "photo_labels.png"))
    )
    cli_record = json.loads((out / "photo.json").read_text())
    web_record = json.loads(open(record).read())
    assert web_record["output_size"] == [55, 73]
    drop = {key: None for key in CLI_ONLY}
    assert web_record | drop == cli_record | drop
    shown = [s for s in cli_record["segments"] if s.get("shown", True)]
    assert [row[0] for row in rows] == [s["class"] for s in shown]


def test_a_web_heat_map_is_the_command_lines(photo, tmp_path, demo, capsys):
    from ovseg.apps.web_heatmap import heatmap_pictures
    from ovseg.preprocess import load_image

    out = tmp_path / "out"
    code, _, err = run_main(main, [photo, "--heatmap", "sky", "--output", out, *SMALL], capsys)
    assert code == 0, err
    picture, _ = heatmap_pictures(demo, load_image(photo), "sky")
    cli = np.asarray(Image.open(out / "photo_heatmap_1_sky.png").convert("RGB"))
    np.testing.assert_array_equal(picture, cli)


@pytest.fixture
def clip_path(tmp_path):
    frames = []
    for t in range(3):
        frame = np.full((96, 128, 3), 200, np.uint8)
        frame[20:44, 8 + 8 * t : 32 + 8 * t] = (220, 30, 30)  # a square moving right
        frames.append(frame)
    path = tmp_path / "moving.mp4"
    write_mp4(path, frames, fps=8)
    return path


def test_a_video_frame_is_drawn_and_listed_as_predict_draws_it(
    clip_path, tmp_path, capsys, monkeypatch
):
    """Frames above --max-output-pixels crashed (the frame at its own size, the masks at the
    output size); the frame's overlay and segments are predict's for that frame as an image
    (stuff classes only: things are coloured by track in a video)."""
    import ovseg.video

    drawn = []
    original = ovseg.video.write_mp4

    def keep(path, frames, fps, **kwargs):
        drawn.extend(frames)
        return original(path, frames, fps, **kwargs)

    monkeypatch.setattr(ovseg.video, "write_mp4", keep)
    classes = ["--classes", "stuff:square, stuff:wall"]
    out = tmp_path / "out"
    code, _, err = run_main(main, [clip_path, *classes, "--output", out, *SMALL], capsys)
    assert code == 0, err
    video = json.loads((out / "moving_frames.json").read_text())
    frame = next(read_frames(clip_path, 1))
    Image.fromarray(frame).save(tmp_path / "frame0.png")
    code, _, err = run_main(
        main, [tmp_path / "frame0.png", *classes, "--output", out, *SMALL], capsys
    )
    assert code == 0, err
    image = json.loads((out / "frame0.json").read_text())
    assert video["per_frame"][0]["segments"] == image["segments"]
    picture = np.asarray(Image.open(out / "frame0_overlay.png").convert("RGB"))
    height, width = picture.shape[:2]
    np.testing.assert_array_equal(drawn[0][:height, :width], picture)
    assert (drawn[0][height:] == 255).all() and (drawn[0][:, width:] == 255).all()


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_a_video_is_segmented_in_the_task_asked_for(clip_path, tmp_path, capsys, task):
    """--task instance on a video silently gave panoptic output."""
    out = tmp_path / "out"
    code, _, err = run_main(
        main,
        [clip_path, "--classes", "square, wall", "--task", task, "--output", out, *SMALL],
        capsys,
    )
    assert code == 0, err
    record = json.loads((out / "moving_frames.json").read_text())
    assert record["task"] == task
    frame = next(read_frames(clip_path, 1))
    Image.fromarray(frame).save(tmp_path / "frame0.png")
    code, _, err = run_main(
        main,
        [tmp_path / "frame0.png", "--classes", "square, wall", "--task", task, "--output", out]
        + SMALL,
        capsys,
    )
    assert code == 0, err
    image = json.loads((out / "frame0.json").read_text())
    segments = record["per_frame"][0]["segments"]
    untracked = [{k: v for k, v in s.items() if k != "track_id"} for s in segments]
    assert untracked == image["segments"]
    for segment in segments:  # instances shown are tracked; a semantic class is no object
        tracked = task == "instance" and segment.get("shown", True) and segment["isthing"]
        assert ("track_id" in segment) == tracked


@pytest.fixture
def sam_file(tmp_path):
    import torch

    from ovseg.sam.zoo import build_sam

    torch.manual_seed(0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    return path


PROMPTS = ["--points", "10,12; 30,20,0", "--boxes", "5,5,40,40; 50,10,79,47"]


def test_every_prompted_mask_drawn_is_in_the_label_map(image, sam_file, tmp_path, capsys):
    """The label PNG left out the prompts scoring below 0.5 that the overlay drew."""
    out = tmp_path / "out"
    sam = ["--masks", "sam", "--sam-model", "tiny", "--sam-weights", sam_file]
    code, _, err = run_main(
        main,
        [image, "--model", "fcclip_tiny_parity", "--classes", "cat, dog, sky", *sam, *PROMPTS]
        + ["--output", out],
        capsys,
    )
    assert code == 0, err
    record = json.loads((out / "photo.json").read_text())
    assert any(s["score"] < 0.5 for s in record["segments"])  # the case that was lost
    labels = np.asarray(Image.open(out / "photo_labels.png"))
    assert set(np.unique(labels)) - {0} == {s["id"] for s in record["segments"]}


def test_short_side_is_honoured_for_prompts_and_sam_masks(image, sam_file, tmp_path, capsys):
    """--short-side was silently ignored with --points / --boxes and --masks sam: the frozen
    CLIP that labels the masks saw the image at the model's own size."""
    sam = ["--masks", "sam", "--sam-model", "tiny", "--sam-weights", sam_file]
    base = [image, "--model", "fcclip_tiny_parity", "--classes", "cat, dog, sky", *sam]
    automatic = ["--sam-points-per-side", "4", "--sam-min-iou", "0", "--sam-min-stability", "0"]
    for extra in (PROMPTS, automatic):
        scores = []
        for short_side in ("64", "160"):
            out = tmp_path / f"out{short_side}{len(extra)}"
            code, _, err = run_main(
                main, [*base, *extra, "--short-side", short_side, "--output", out], capsys
            )
            assert code == 0, err
            record = json.loads((out / "photo.json").read_text())
            scores.append([s["score"] for s in record["segments"]])
        assert scores[0] != scores[1], extra
