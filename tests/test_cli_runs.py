"""ovseg predict as a user runs it again and again: outputs are redone when their settings
change, names never collide, bad input is refused before the model loads, Ctrl-C stops
cleanly, extreme images and Windows vocabulary files work, and guessed kinds are said."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_main
from ovseg.apps import predict_segment
from ovseg.apps.predict import main

TINY = ["--model", "fcclip_tiny_parity", "--short-side", "64"]


def save(path, height=48, width=80, seed=0):
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return path


def run(args, capsys):
    return run_main(main, args, capsys)


@pytest.mark.parametrize(
    "change",
    [
        ["--task", "semantic"],
        ["--classes", "cat, sky, road"],
        ["--classes", "thing:cat, dog/puppy"],
        ["--short-side", "96"],
        ["--max-output-pixels", "5000"],
        ["--precision", "fp32"],
    ],
)
def test_outputs_are_redone_when_the_settings_change(tmp_path, capsys, change):
    """Outputs used to be skipped whenever the three files existed, whatever model, classes,
    task or size made them."""
    image = save(tmp_path / "photo.png")
    out = tmp_path / "out"
    base = [image, "--classes", "cat, dog/puppy", "--output", out, *TINY]
    assert run(base, capsys)[0] == 0
    first = json.loads((out / "photo.json").read_text())
    assert first["settings"]["task"] == "panoptic"
    code, _, err = run(base, capsys)  # the same settings: skipped
    assert code == 0 and "skipping 1 input" in err
    code, _, err = run(base + change, capsys)  # argparse: the last value wins
    assert code == 0 and "skipping" not in err
    again = json.loads((out / "photo.json").read_text())
    assert again["settings"] != first["settings"]


def test_a_changed_image_is_redone(tmp_path, capsys):
    image = save(tmp_path / "photo.png")
    args = [image, "--classes", "cat", "--output", tmp_path / "out", *TINY]
    assert run(args, capsys)[0] == 0
    save(image, seed=1)  # same name, new pixels
    code, _, err = run(args, capsys)
    assert code == 0 and "skipping" not in err


def test_inputs_with_one_stem_get_outputs_of_their_own(tmp_path, capsys):
    """a.jpg and a.png in one folder used to write the same a.json / a_overlay.png."""
    folder = tmp_path / "images"
    folder.mkdir()
    save(folder / "a.png", seed=1)
    Image.open(save(folder / "tmp.png", seed=2)).convert("RGB").save(folder / "a.jpg")
    (folder / "tmp.png").unlink()
    out = tmp_path / "out"
    assert run([folder, "--classes", "cat", "--output", out, *TINY], capsys)[0] == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["a_jpg.json", "a_png.json"]
    assert json.loads((out / "a_jpg.json").read_text())["image"].endswith("a.jpg")
    code, _, err = run([folder, "--classes", "cat", "--output", out, *TINY], capsys)
    assert code == 0 and "skipping 2 input" in err


@pytest.mark.parametrize(
    "bad, message",
    [
        ("text", "not an image file"),
        ("empty", "not an image file"),
        ("missing", "input not found"),
    ],
)
def test_one_bad_file_is_one_line_exit_2_and_no_folder(tmp_path, capsys, bad, message):
    """The model used to load first (its fallback line printed), then the error: two lines,
    exit 1, and an empty output folder left behind."""
    path = tmp_path / "photo.png"
    if bad == "text":
        path.write_text("not an image")
    elif bad == "empty":
        path.write_bytes(b"")
    out = tmp_path / "out"
    code, _, err = run([path, "--classes", "cat", "--output", out, "--model", "auto"], capsys)
    assert code == 2 and err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--device", "tpu"], "unknown device 'tpu': use cpu or cuda"),
        (["--max-output-pixels", "0"], "--max-output-pixels 0 is too small"),
        (["--max-frames", "0"], "--max-frames must be at least 1"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, option, message):
    image = save(tmp_path / "photo.png")
    out = tmp_path / "out"
    code, _, err = run([image, "--classes", "cat", "--output", out, *TINY, *option], capsys)
    assert code == 2 and err == f"error: {err[7:]}" and message in err
    assert err.count("\n") == 1 and not out.exists()


def test_a_bad_file_in_a_folder_is_skipped_and_said_on_its_own_line(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        save(folder / f"{index}.png", seed=index)
    (folder / "broken.png").write_text("no image")
    out = tmp_path / "out"
    code, _, err = run([folder, "--classes", "cat", "--output", out, *TINY], capsys)
    assert code == 1
    lines = err.splitlines()
    assert any(line.startswith("error: ") and "broken.png" in line for line in lines)
    assert "1 of 4 input(s) failed" in err
    assert len(list(out.glob("*.json"))) == 3
    # several inputs end with one summary line (there was none)
    assert any(line.startswith("3 of 3 inputs segmented (found: ") for line in lines), err
    assert lines[-2].endswith(f"-> {out}") or lines[-1].endswith(f"-> {out}")


def test_ctrl_c_says_how_far_it_got_and_exits_130(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        save(folder / f"{index}.png", seed=index)
    real = predict_segment.process_image
    calls = []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_segment, "process_image", interrupted_on_the_third)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main([str(folder), "--classes", "cat", "--output", str(out), *TINY])
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted: 2 of 4 done" in err and "Traceback" not in err
    assert len(list(out.glob("*.json"))) == 2


def test_extreme_aspect_ratios_do_not_stop_a_folder(tmp_path, capsys):
    """A 1x5000 image used to raise PIL's ValueError and abort the run (exit 2)."""
    folder = tmp_path / "images"
    folder.mkdir()
    save(folder / "thin.png", height=1, width=5000)
    save(folder / "tall.png", height=3000, width=2)
    save(folder / "plain.png")
    out = tmp_path / "out"
    code, _, err = run([folder, "--classes", "cat, sky", "--output", out, *TINY], capsys)
    assert code == 0, err
    thin = json.loads((out / "thin.json").read_text())
    assert thin["image_size"] == [1, 5000]
    assert np.asarray(Image.open(out / "thin_labels.png")).shape[:2] == (1, 5000)


def test_vocabulary_file_with_a_byte_order_mark(tmp_path, capsys):
    """Windows editors save 'UTF-8 with BOM': the first class used to be named '\\ufeffsky'
    (or a file with kinds failed with "line 1 starts with 'thing'")."""
    image = save(tmp_path / "photo.png")
    for text, name in [("stuff\tsky\nthing\tcat\n", "kinds.txt"), ("sky\ncat\n", "plain.txt")]:
        vocab = tmp_path / name
        vocab.write_bytes(b"\xef\xbb\xbf" + text.encode())
        out = tmp_path / name.removesuffix(".txt")
        code, _, err = run([image, "--vocab", vocab, "--output", out, *TINY], capsys)
        assert code == 0, err
        record = json.loads((out / "photo.json").read_text())
        assert record["classes"] == ["sky", "cat"]


def test_kinds_follow_the_model_and_can_be_given(tmp_path, capsys):
    """'house' is COCO stuff, so it used to be guessed stuff even for synthetic_tiny, which
    was trained with house as a thing; now the model's training kinds come first, the guesses
    are said, and thing: / stuff: set a kind."""
    image = save(tmp_path / "scene.png")
    out = tmp_path / "out"
    args = [image, "--task", "instance", "--model", "synthetic_tiny", "--output", out]
    code, _, err = run(args + ["--classes", "house, circle, water, zebra"], capsys)
    assert code == 0
    line = next(line for line in err.splitlines() if "kinds guessed" in line)
    assert "house thing (model's training class)" in line
    assert "water stuff" in line and "zebra thing (default)" in line
    code, _, err = run(args + ["--classes", "stuff:house, thing:brick", "--overwrite"], capsys)
    assert code == 0 and "kinds guessed" not in err
    record = json.loads((out / "scene.json").read_text())
    assert record["settings"]["given_kinds"] == ["stuff", "thing"]


def test_instances_below_the_threshold_are_kept_in_the_json_only(tmp_path, capsys):
    """--task instance used to list and draw every instance down to score 0.00 (unlabelled
    boxes everywhere); the threshold now decides what is drawn, listed and in the label PNG."""
    image = save(tmp_path / "photo.png", height=96, width=128)
    out = tmp_path / "out"
    args = [image, "--classes", "cat, dog, cup", "--task", "instance", "--output", out, *TINY]
    assert run(args + ["--score-threshold", "0"], capsys)[0] == 0
    every = json.loads((out / "photo.json").read_text())["segments"]
    assert every and all(s["shown"] for s in every)
    scores = sorted(s["score"] for s in every)
    threshold = scores[len(scores) // 2]  # about half above, half below
    code, _, err = run(args + ["--score-threshold", str(threshold)], capsys)
    assert code == 0
    record = json.loads((out / "photo.json").read_text())
    shown = [s for s in record["segments"] if s["shown"]]
    assert len(record["segments"]) == len(every)  # the JSON keeps all, marked
    assert shown and all(s["score"] >= threshold for s in shown)
    assert all(s["score"] < threshold for s in record["segments"] if not s["shown"])
    labels = np.asarray(Image.open(out / "photo_labels.png"))
    assert set(np.unique(labels).tolist()) - {0} <= {s["id"] for s in shown}
    assert f"{len(shown)} segments" in err


def test_semantic_scores_are_probabilities():
    """The semantic 'score' was the mean summed query score (1.73 seen with synthetic_tiny);
    now it is the class's mean per-pixel probability (its share of the pixel's scores)."""
    import torch

    from ovseg.results import describe
    from ovseg.vocabulary import as_vocabulary

    sem_seg = torch.zeros(2, 4, 4)
    sem_seg[0], sem_seg[1] = 1.5, 0.5  # summed over queries: above 1
    sem_seg[1, :, 2:] = 2.5  # the right half is class 1 at 2.5 / 4.0
    result = {"vocabulary": as_vocabulary(["cat", "sky"]), "sem_seg": sem_seg}
    _, segments = describe(result, "semantic")
    scores = {s["class"]: s["score"] for s in segments}
    assert scores == pytest.approx({"cat": 0.75, "sky": 2.5 / 4.0})


def test_a_toy_model_says_so_on_stderr_in_the_json_and_in_the_legend(tmp_path, capsys):
    """synthetic_tiny on a photo with everyday classes used to answer confidently with no
    word that the model is a toy that never learnt these classes."""
    image = save(tmp_path / "photo.png")
    out = tmp_path / "out"
    args = [image, "--classes", "person, cat, star", "--model", "synthetic_tiny"]
    code, _, err = run(args + ["--output", out], capsys)
    assert code == 0
    caveats = [line for line in err.splitlines() if "toy model" in line]
    assert len(caveats) == 1 and "never taught: person, cat" in caveats[0]
    assert "star" not in caveats[0].split("never taught:")[1]
    record = json.loads((out / "photo.json").read_text())
    assert "toy model" in record["model_caveat"]
    from ovseg.visualize import draw_result

    picture = np.asarray(Image.open(image))
    with_note = np.asarray(draw_result(picture, [], "panoptic", note="model: synthetic_tiny (toy)"))
    without = np.asarray(draw_result(picture, [], "panoptic"))
    assert with_note.shape[1] > without.shape[1]  # the legend widened for the note
    drawn = np.asarray(Image.open(out / "photo_overlay.png"))
    overlay = np.asarray(
        draw_result(
            picture, [], "panoptic", note="model: synthetic_tiny (toy: synthetic shapes only)"
        )
    )
    assert drawn.shape[1] >= overlay.shape[1] - 1  # the legend made room for the note
    # The synthetic world's own classes on the random parity model: random weights said.
    code, _, err = run([image, "--vocab", "synthetic_world", "--output", out, *TINY], capsys)
    assert code == 0 and "RANDOM weights" in err


@pytest.mark.parametrize("name", ["naïve", "Straße", "猫", "ねこ", "고양이", "кот"])
def test_class_names_in_any_script_are_drawn_as_words(name):
    """Pillow's default font drew 'naïve', 'Straße', '猫' and 'ねこ' with missing-glyph boxes:
    the legend font covers them (each letter's drawing differs from the missing glyph's)."""
    from ovseg.visualize import _font

    font = _font(20)
    missing = np.asarray(font.getmask("\U000f0000"))  # a private-use code point: no glyph
    for letter in name:
        drawn = np.asarray(font.getmask(letter))
        assert drawn.shape != missing.shape or (drawn != missing).any(), letter


@pytest.mark.parametrize(
    "option, message",
    [
        (["--points", ""], '--points "" is empty'),
        (["--boxes", " ; "], '--boxes " ; " is empty'),
        (["--score-threshold", "0.5", "--task", "semantic"], "--task instance only"),
        (["--score-threshold", "0.5"], "not --task panoptic"),
        (["--score-threshold", "0.5", "--task", "instance", "--points", "5,5"], "--points"),
    ],
)
def test_an_option_nothing_would_read_is_refused_not_ignored(tmp_path, capsys, option, message):
    """--points "" ran a whole-image segmentation; --score-threshold with another task than
    instance was ignored."""
    image = save(tmp_path / "photo.png")
    out = tmp_path / "out"
    code, _, err = run([image, "--classes", "cat", "--output", out, *TINY, *option], capsys)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_dropped_input_is_said_in_one_warning_line(tmp_path, capsys):
    """An animated GIF's later frames, a class name past the text context and a --short-side
    the long-side limit caps were dropped without a word."""
    frames = [Image.fromarray(np.full((32, 48, 3), 40 * k, np.uint8)) for k in range(3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    long_name = " ".join(["enormous"] * 90) + " cat"
    out = tmp_path / "out"
    code, _, err = run(
        [gif, "--classes", f"dog, {long_name}", "--output", out, "--model", "fcclip_tiny_parity"]
        + ["--short-side", "100000", "--max-output-pixels", "5000"],
        capsys,
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 3, err
    animated, capped, cut = warnings
    assert "anim.gif is animated (3 frames): only the first frame" in animated
    assert "--short-side 100000" in capped and "long-side limit of 1333" in capped
    assert "'enormous enormous" in cut and "'dog'" not in cut and "truncated" in cut
    assert (out / "anim.json").is_file()


def test_legend_colours_of_a_vocabulary_are_told_apart():
    """Star (class 3) and sand (class 16) of the synthetic world were drawn in two nearly
    equal purples (RGB distance 24): every two of the first 24 colours now differ clearly."""
    import itertools

    from ovseg.visualize import palette
    from ovseg.vocabulary import load_vocabulary

    names = load_vocabulary("synthetic_world").names
    colours = palette(24).astype(float)
    star, sand = names.index("star"), names.index("sand")
    assert np.linalg.norm(colours[star] - colours[sand]) > 50
    pairs = itertools.combinations(range(24), 2)
    assert min(np.linalg.norm(colours[i] - colours[j]) for i, j in pairs) > 50
    assert (palette(64)[:24] == palette(24)).all()  # a class keeps its colour in any count
