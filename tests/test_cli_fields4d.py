"""``ovseg fields`` on a dynamic scene: the synthetic 4D world written, fitted (deformation,
time-agnostic latents, captions through the status field) and queried end to end with the
shipped model and the packaged sentence encoder; bad input refused in one line with nothing
written."""

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.apps.fields import main

FIT = [
    "--model",
    "synthetic_tiny",
    "--iterations",
    "16",
    "--language-iterations",
    "8",
    "--status-iterations",
    "8",
    "--no-progress",
]
SMALL = ["--steps", "3", "--train-cameras", "2", "--test-cameras", "1", "--size", "48x40"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("world4d")
    assert main(["world4d", str(root), *SMALL]) == 0
    return root / "scene_000"


@pytest.fixture(scope="module")
def field(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("field4d") / "field"
    assert main(["fit", str(scene), "--out", str(out), *FIT]) == 0
    return out


def test_fit_writes_a_complete_4d_field(field, scene):
    meta = json.loads((field / "field.json").read_text())
    assert meta["format"] == "ovseg-language-field-4d/1" and meta["complete"]
    assert meta["time_range"] == [0.0, 1.0]
    assert set(meta["timings_s"]) == {"colour", "features", "autoencoder", "language", "status"}
    for name in (
        "deformation.safetensors",
        "status.safetensors",
        "gaussians.safetensors",
        "caption_embeddings.safetensors",
        "status_autoencoder.safetensors",
    ):
        assert (field / name).is_file()
    from safetensors.torch import load_file

    gaussians = load_file(field / "gaussians.safetensors")  # Spacetime Gaussians by default
    assert {"time_centres", "time_log_scales", "velocities"} <= set(gaussians)
    assert meta["config"]["time_slices"] == 2
    texts = json.loads((field / "captions.json").read_text())["texts"]
    written = json.loads((scene / "captions.json").read_text())
    assert set(texts) == {s["caption"] for o in written["objects"] for s in o["states"]}


def test_a_finished_fit_is_not_fitted_again(field, scene, capsys):
    before = json.loads((field / "field.json").read_text())["timings_s"]
    assert main(["fit", str(scene), "--out", str(field), *FIT]) == 0
    after = json.loads((field / "field.json").read_text())["timings_s"]
    # every stage loads its result: the second run adds only loading time
    assert sum(after.values()) - sum(before.values()) < 0.5 * sum(before.values())


def test_query_over_time_with_a_state_and_a_video(field, tmp_path, capsys):
    out = tmp_path / "q"
    code = main(
        [
            "query",
            str(field),
            "--text",
            "grass",
            "--state",
            "a blue star",
            "--video",
            "--out",
            str(out),
            "--model",
            "synthetic_tiny",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    # the held-out camera c02 by default; every frame time of the scene (0, 0.5, 1)
    for t in ("0", "0.5", "1"):
        assert f"c02_1_grass_t{t}_heatmap.png" in names and f"c02_1_grass_t{t}_mask.png" in names
    assert "c02_1_grass.mp4" in names and "c02_state1_a-blue-star.mp4" in names
    record = json.loads((out / "c02_state1_a-blue-star.json").read_text())
    assert record["times"] == [0.0, 0.5, 1.0] and len(record["scores"]) == 3
    holds = zip(record["times"], record["holds"], strict=True)
    assert record["holds_at"] == [t for t, h in holds if h]
    for t in record["holds_at"]:
        mask = np.asarray(Image.open(out / f"c02_state1_a-blue-star_t{t:g}_mask.png"))
        assert mask.shape == (40, 48) and set(np.unique(mask)) <= {0, 255}
    assert "holds at" in capsys.readouterr().out


def test_a_query_time_outside_the_video_is_refused(field, tmp_path, capsys):
    out = tmp_path / "q"
    code = main(
        [
            "query",
            str(field),
            "--text",
            "grass",
            "--time",
            "0.5",
            "--time",
            "1.5",
            "--out",
            str(out),
            "--model",
            "synthetic_tiny",
        ]
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: time 1.5 is outside the video (0 to 1)"


def test_a_time_range_picks_the_frames_inside_it(field, tmp_path, capsys):
    out = tmp_path / "q"
    code = main(
        [
            "query",
            str(field),
            "--state",
            "a blue star",
            "--time-range",
            "0.25",
            "1",
            "--out",
            str(out),
            "--model",
            "synthetic_tiny",
        ]
    )
    assert code == 0
    record = json.loads((out / "c02_state1_a-blue-star.json").read_text())
    assert record["times"] == [0.5, 1.0]  # the frames at 0.5 and 1, not the one at 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--time-range", "0.8", "0.2"], "error: --time-range 0.8 0.2: the start is after the end"),
        (["--time-range", "0.5", "2"], "error: time 2 is outside the video (0 to 1)"),
        (
            ["--time-range", "0.6", "0.9"],
            "error: no frame between 0.6 and 0.9; the frames are at 0, 0.5, 1",
        ),
        (
            ["--time", "0.5", "--time-range", "0", "1"],
            "error: --time and --time-range: give one of them",
        ),
    ],
)
def test_a_bad_time_range_is_refused_in_one_line(field, tmp_path, capsys, extra, message):
    out = tmp_path / "q"
    code = main(
        [
            "query",
            str(field),
            "--text",
            "grass",
            *extra,
            "--out",
            str(out),
            "--model",
            "synthetic_tiny",
        ]
    )
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_a_query_needs_a_text_or_a_state(field, tmp_path, capsys):
    assert (
        main(["query", str(field), "--out", str(tmp_path / "a"), "--model", "synthetic_tiny"]) == 2
    )
    assert "--text or a --state" in capsys.readouterr().err


def _copy_scene(scene, tmp_path):
    import shutil

    copy = tmp_path / "scene"
    shutil.copytree(scene, copy)
    return copy


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("unknown_object", "which no segment map of the scene has"),
        ("overlap", "overlap"),
        ("no_times", "some frames have a 'time' and some do not"),
        ("out_of_order", "times out of order"),
    ],
)
def test_bad_dynamic_scenes_are_refused_in_one_line(scene, tmp_path, capsys, breakage, message):
    copy = _copy_scene(scene, tmp_path)
    captions = json.loads((copy / "captions.json").read_text())
    transforms = json.loads((copy / "transforms_train.json").read_text())
    if breakage == "unknown_object":
        captions["objects"][0]["id"] = 250
    elif breakage == "overlap":
        states = captions["objects"][0]["states"]
        states.append({"start": 0.0, "end": 0.9, "caption": "a ghost"})
    elif breakage == "no_times":
        del transforms["frames"][1]["time"]
    else:
        frames = transforms["frames"]
        frames[0], frames[1] = frames[1], frames[0]
    (copy / "captions.json").write_text(json.dumps(captions))
    (copy / "transforms_train.json").write_text(json.dumps(transforms))
    out = tmp_path / "field"
    assert main(["fit", str(copy), "--out", str(out), *FIT]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]


def test_captions_on_a_static_scene_are_refused(tmp_path, capsys):
    from ovseg.synthetic.world3d import write_scene3d

    scene = write_scene3d(tmp_path / "s", 0, 0, train_views=2, test_views=1, width=32, height=32)
    code = main(["fit", str(scene), "--out", str(tmp_path / "f"), "--captions", "x.json", *FIT])
    assert code == 2 and "for dynamic scenes" in capsys.readouterr().err
