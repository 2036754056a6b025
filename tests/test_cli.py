"""demo/predict.py end to end, and every kind of bad input: clear one-line error, non-zero
exit, no partial output."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import PARITY, run_main
from ovseg.apps.predict import main

TINY = ["--model", "fcclip_tiny_parity", "--short-side", "64"]


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return path


def run(args, capsys):
    return run_main(main, args, capsys)


def outputs_of(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize("task", ["panoptic", "semantic", "instance"])
def test_writes_overlay_labels_and_json(photo, tmp_path, capsys, task):
    out = tmp_path / "out"
    code, _, _ = run(
        [photo, "--classes", "cat, dog/puppy, sky", "--task", task, "--output", out, *TINY], capsys
    )
    assert code == 0
    assert outputs_of(out) == ["photo.json", "photo_labels.png", "photo_overlay.png"]
    record = json.loads((out / "photo.json").read_text())
    assert record["classes"] == ["cat", "dog", "sky"] and record["task"] == task
    labels = np.asarray(Image.open(out / "photo_labels.png"))
    assert labels.shape[:2] == (48, 80)
    overlay = Image.open(out / "photo_overlay.png")
    assert overlay.height >= 48 and overlay.width > 80  # image + legend panel
    from pycocotools import mask as mask_utils

    for segment in record["segments"]:
        rle = dict(segment["rle"], counts=segment["rle"]["counts"].encode())
        assert int(mask_utils.area(rle)) == segment["area"] > 0
        assert segment["class"] == record["classes"][segment["class_id"]]


def test_directory_skips_existing_outputs(tmp_path, photo, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(photo, folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert run([folder, "--vocab", "coco", "--output", out, *TINY], capsys)[0] == 0
    assert len(outputs_of(out)) == 6
    stamp = (out / "a.json").stat().st_mtime_ns
    code, _, err = run([folder, "--vocab", "coco", "--output", out, *TINY], capsys)
    assert code == 0 and "skipping 2" in err
    assert (out / "a.json").stat().st_mtime_ns == stamp


def test_unicode_class_names(photo, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = run(
        [photo, "--classes", "Zebra, 斑马, café/caffè", "--output", out, *TINY], capsys
    )
    assert code == 0
    assert json.loads((out / "photo.json").read_text())["classes"] == ["Zebra", "斑马", "café"]


def test_image_kinds_work(tmp_path, capsys):
    rgb = np.random.default_rng(3).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    folder = tmp_path / "kinds"
    folder.mkdir()
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif)
    out = tmp_path / "out"
    assert run([folder, "--classes", "cat, dog", "--output", out, *TINY], capsys)[0] == 0
    assert len(outputs_of(out)) == 12
    rotated = json.loads((out / "rotated.json").read_text())
    assert rotated["image_size"] == [60, 40]


def bad_files(tmp_path, photo):
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello, I am text")
    truncated = tmp_path / "truncated.jpg"
    Image.open(photo).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    zero = tmp_path / "zero.png"
    # A PNG header that declares a 0 x 0 image.
    zero.write_bytes(
        bytes.fromhex("89504e470d0a1a0a0000000d4948445200000000000000000802000000") + b"\0" * 8
    )
    return {
        "missing": tmp_path / "nope.jpg",
        "not an image": not_image,
        "truncated": truncated,
        "empty": empty,
        "zero pixels": zero,
    }


@pytest.mark.parametrize("kind", ["missing", "not an image", "truncated", "empty", "zero pixels"])
def test_bad_images(tmp_path, photo, capsys, kind):
    out = tmp_path / "out"
    path = bad_files(tmp_path, photo)[kind]
    code, _, err = run([path, "--classes", "cat", "--output", out, *TINY], capsys)
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("error")]
    assert lines and path.name in lines[0]
    assert outputs_of(out) == []  # nothing written, not even temp files


def test_a_truncated_image_is_refused_before_the_model_loads(tmp_path, photo, capsys):
    """Exit 2 like any other bad input, one line, before any model loads (its header alone
    reads fine: only decoding finds the missing bytes)."""
    truncated = tmp_path / "cut_short.jpg"
    Image.open(photo).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:-400])  # the header whole, the pixels not
    code, _, err = run([truncated, "--classes", "cat", "--output", tmp_path / "out", *TINY], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "is truncated or corrupt" in err, err


@pytest.mark.parametrize(
    "classes,message",
    [
        ("", "empty"),
        (" ,  , ", "empty"),
        ("cat, dog, Cat", "given twice"),
        ("cat/kitty, kitty", "given twice"),
    ],
)
def test_bad_class_lists(photo, tmp_path, capsys, classes, message):
    out = tmp_path / "out"
    code, _, err = run([photo, "--classes", classes, "--output", out, *TINY], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unknown_vocab_and_task(photo, tmp_path, capsys):
    code, _, err = run([photo, "--vocab", "klingon", "--output", tmp_path / "o", *TINY], capsys)
    assert code == 2 and "no vocabulary 'klingon'" in err
    with pytest.raises(SystemExit):
        main([str(photo), "--classes", "cat", "--task", "depth"])


def test_unwritable_output(photo, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a directory should be")
    code, _, err = run([photo, "--classes", "cat", "--output", blocker / "out", *TINY], capsys)
    assert code == 2 and "cannot write to output directory" in err


def test_bad_weights(photo, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 1000)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((PARITY / "fcclip_tiny_official.pth").read_bytes()[:50_000])
    for weights, message in (
        (corrupt, "corrupt or truncated"),
        (truncated, "not a readable torch checkpoint"),
        (PARITY / "fcclip_tiny_official.pth", "do not fit this model"),
    ):
        out = tmp_path / "out"
        config = "fcclip_convnext_large_coco" if "fit" in message else "fcclip_tiny_parity"
        code, _, err = run(
            [photo, "--classes", "cat", "--output", out, "--weights", weights, "--config", config],
            capsys,
        )
        assert code == 2 and message in err, err
        assert outputs_of(out) == []


def test_weights_with_a_wrong_key_are_one_line_naming_the_file_and_keys(photo, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from ovseg import model_zoo

    tensors = load_file(model_zoo.local_weights("synthetic_tiny"))
    tensors["void_embedding.weights"] = tensors.pop("void_embedding.weight")
    renamed = tmp_path / "renamed.safetensors"
    save_file(tensors, renamed)
    out = tmp_path / "out"
    code, _, err = run(
        [photo, "--classes", "cat", "--output", out, "--weights", renamed]
        + ["--config", "synthetic_tiny"],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(renamed) in err
    assert "1 missing: void_embedding.weight " in err
    assert "1 unexpected: void_embedding.weights)" in err
    assert outputs_of(out) == []


def test_missing_real_weights_never_fall_back_silently(photo, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(
        [photo, "--classes", "cat", "--output", out, "--model", "fcclip_convnext_large_coco"],
        capsys,
    )
    assert code == 2 and "put it at" in err
    code, _, err = run([photo, "--classes", "cat", "--output", out, "--short-side", "64"], capsys)
    assert code == 0 and "not found" in err and "using synthetic_tiny" in err  # said plainly


def test_huge_image_is_resized_not_fatal(tmp_path, capsys):
    path = tmp_path / "huge.png"
    Image.new("RGB", (6000, 4000), (90, 120, 200)).save(path)
    out = tmp_path / "out"
    code, _, _ = run(
        [path, "--classes", "sky", "--output", out, *TINY, "--max-output-pixels", "60000"], capsys
    )
    assert code == 0
    record = json.loads((out / "huge.json").read_text())
    assert record["image_size"] == [4000, 6000]
    height, width = record["output_size"]
    assert height * width <= 60000
