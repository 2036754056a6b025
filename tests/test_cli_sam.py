"""ovseg predict with SAM masks and prompts: the files a user gets, and bad input refused in
one line with exit 2 and nothing written."""

import json

import pytest
import torch
from PIL import Image

from conftest import run_main
from ovseg.apps.predict import main
from ovseg.sam.zoo import build_sam

TINY = ["--model", "fcclip_tiny_parity", "--short-side", "64", "--classes", "cat, dog, sky"]


@pytest.fixture
def sam_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    return path


def sam_args(sam_file):
    return ["--masks", "sam", "--sam-model", "tiny", "--sam-weights", sam_file]


def test_prompts_with_sam_write_one_labelled_mask_per_object(image, sam_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = [image, *TINY, *sam_args(sam_file), "--output", out]
    code, _, err = run_main(
        main, [*args, "--points", "10,12; 30,20,0", "--boxes", "5,5,40,40; 50,10,79,47"], capsys
    )
    assert code == 0, err
    record = json.loads((out / "photo.json").read_text())
    assert record["task"] == "prompts" and record["masks_from"] == str(sam_file)
    assert [p["prompt"] for p in record["prompts"]] == [
        "box 5,5,40,40",
        "box 50,10,79,47",
        "2 points",
    ]
    for prompt in record["prompts"]:
        assert prompt["top_classes"][0]["class"] in ("cat", "dog", "sky")
        assert 0 <= prompt["mask_score"] <= 1
    assert record["settings"]["masks"]["points"] == "10,12; 30,20,0"
    overlay = Image.open(out / "photo_overlay.png")
    assert overlay.height >= 48 and overlay.width > 80  # the image, then the legend
    assert Image.open(out / "photo_labels.png").size == (80, 48)


def test_automatic_sam_masks_in_each_task(image, sam_file, tmp_path, capsys):
    auto = ["--sam-min-iou", "0", "--sam-min-stability", "0", "--sam-points-per-side", "4"]
    for task in ("panoptic", "semantic", "instance"):
        out = tmp_path / task
        code, _, err = run_main(
            main,
            [image, *TINY, *sam_args(sam_file), *auto, "--task", task, "--output", out],
            capsys,
        )
        assert code == 0, err
        record = json.loads((out / "photo.json").read_text())
        assert record["task"] == task and record["masks_from"] == str(sam_file)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--points", "200,10"], "outside the 80x48 image"),
        (["--boxes", "30,10,20,40"], "x1 > x0"),
        (["--points", "nan,4"], "NaN"),
        (["--points=-3,4"], "negative coordinate"),
        (["--points", ";".join(["1,1"] * 65)], "too many prompts"),
        (["--points", "3;4"], "has 1 numbers"),
    ],
)
def test_bad_prompts_are_one_line_exit_2_nothing_written(
    image, sam_file, tmp_path, capsys, extra, message
):
    out = tmp_path / "out"
    code, _, err = run_main(
        main, [image, *TINY, *sam_args(sam_file), *extra, "--output", out], capsys
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


def test_prompts_are_checked_against_the_picture_as_shown(sam_file, tmp_path, capsys):
    """A photo stored 80x48 with EXIF orientation 6 is shown (and segmented) 48x80: prompts
    are in that picture's pixels, and its bounds are the ones checked."""
    import numpy as np

    photo = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the Orientation tag: turn 90 degrees clockwise to show
    stored = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    Image.fromarray(stored).save(photo, exif=exif)
    args = [photo, *TINY, *sam_args(sam_file), "--output", tmp_path / "out"]
    code, _, err = run_main(main, [*args, "--points", "20,70", "--boxes", "2,50,40,79"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "turned.json").read_text())
    assert record["image_size"] == [80, 48]
    code, _, err = run_main(main, [*args, "--points", "70,20", "--overwrite"], capsys)
    assert code == 2 and "outside the 48x80 image" in err.strip().splitlines()[-1], err


def test_bad_sam_weights_are_refused_before_anything_is_written(image, sam_file, tmp_path, capsys):
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(sam_file.read_bytes()[:500])
    cases = [
        (["--masks", "sam"], "--masks sam needs SAM weights"),
        (["--masks", "sam", "--sam-model", "vit_b", "--sam-weights", sam_file], "--sam-model tiny"),
        (["--masks", "sam", "--sam-model", "tiny", "--sam-weights", corrupt], "corrupt"),
        (["--masks", "sam", "--sam-weights", tmp_path / "none.pth"], "not found"),
        (["--points", "3,4"], "no prompt head"),
        ([*sam_args(sam_file), "--sam-min-iou", "2"], "not in 0..1"),
    ]
    for extra, message in cases:
        code, _, err = run_main(main, [image, *TINY, *extra, "--output", out], capsys)
        assert code == 2, extra
        assert message in err.strip().splitlines()[-1], (extra, err)
        assert not out.exists()
