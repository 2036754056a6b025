"""``ovseg fields lift``: a synthetic scene's ground-truth splat lifted with the shipped model
and queried (heat maps, a 3DGS PLY extract), resumed, read through 3DGS's cameras.json; every
bad input refused in one line with nothing written."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.apps.fields import main

MODEL = ["--model", "synthetic_tiny"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("lift")
    assert (
        main(
            [
                "world",
                str(root),
                "--scenes",
                "1",
                "--train-views",
                "4",
                "--test-views",
                "1",
                "--gaussians",
                "8000",
            ]
        )
        == 0
    )
    return root / "scene_000"


@pytest.fixture(scope="module")
def lifted(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("lifted") / "field"
    assert (
        main(
            [
                "lift",
                str(scene),
                "--splat",
                str(scene / "splat.ply"),
                "--out",
                str(out),
                *MODEL,
                "--no-progress",
            ]
        )
        == 0
    )
    return out


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def test_lift_writes_a_complete_field(lifted, scene):
    meta = json.loads((lifted / "field.json").read_text())
    assert meta["complete"] and meta["format"] == "ovseg-lifted-field/1"
    assert meta["gaussians"] == 8000 and 0 < meta["lifted_gaussians"] <= 8000
    assert set(meta["timings_s"]) == {"features", "lift"}
    assert sorted(p.name for p in (lifted / "features").iterdir()) == [
        f"view_00{k}.npz" for k in range(4)
    ]
    assert not (lifted / "lift_state.npz").exists()  # progress is removed once finished
    from safetensors.torch import load_file

    tensors = load_file(lifted / "lifted.safetensors")
    assert tensors["segment_embeddings"].dtype == torch.float16
    assert tensors["mixture_segments"].shape == (8000, 8)


def test_query_and_extract(lifted, tmp_path, capsys):
    """Heat map, mask and render of the held-out view; the extract opens as a splat again and
    with trimesh."""
    out = tmp_path / "q"
    extract = tmp_path / "sel.ply"
    assert (
        main(
            [
                "query",
                str(lifted),
                "--text",
                "sand",
                "--out",
                str(out),
                "--extract",
                str(extract),
                *MODEL,
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "view_004_1_sand_heatmap.png",
        "view_004_1_sand_mask.png",
        "view_004_render.png",
    ]
    render = np.asarray(Image.open(out / "view_004_render.png"))
    assert render.shape == (128, 160, 3) and render.std() > 10
    from ovseg.fields.splat_ply import read_splat

    selected = read_splat(extract)
    assert 0 < len(selected) < 8000
    import trimesh

    assert len(trimesh.load(extract, process=False).vertices) == len(selected)
    assert "extract:" in capsys.readouterr().out


def test_extract_selects_the_right_gaussians(lifted, scene):
    """Per Gaussian, each of the scene's two largest classes is far more relevant on its own
    Gaussians than on the others (the small ones depend on what 4 views of the toy model
    found)."""
    from ovseg.fields.lift import LiftedField
    from ovseg.predictor import OVSegPredictor
    from ovseg.synthetic.world3d import make_scene3d

    field = LiftedField.load(lifted, OVSegPredictor.from_pretrained("synthetic_tiny"))
    world = make_scene3d(0, 0)
    means = field.splat.cloud.means
    row, col = world.texel_of(means[:, 0], means[:, 1])  # ground and tops: the texture's
    truth = torch.from_numpy(world.segment.astype(np.int64))[row, col]
    seen = field.lifted
    sizes = torch.bincount(truth[seen], minlength=len(world.segments))
    largest = [world.segments[int(k)] for k in sizes.argsort(descending=True)[:2]]
    scores = field.gaussian_relevancy([segment["category"] for segment in largest])
    for k, segment in enumerate(largest):
        inside, outside = seen & (truth == segment["id"]), seen & (truth != segment["id"])
        assert scores[k][inside].mean() > scores[k][outside].mean() + 0.5, segment["category"]


def test_a_second_lift_resumes_and_gives_the_same_field(lifted, scene, tmp_path):
    import shutil

    again = tmp_path / "again"
    shutil.copytree(lifted, again)
    (again / "lifted.safetensors").unlink()
    meta = json.loads((again / "field.json").read_text())
    meta["complete"] = False
    (again / "field.json").write_text(json.dumps(meta))
    assert (
        main(
            [
                "lift",
                str(scene),
                "--splat",
                str(scene / "splat.ply"),
                "--out",
                str(again),
                *MODEL,
                "--no-progress",
            ]
        )
        == 0
    )
    assert (again / "lifted.safetensors").read_bytes() == (
        lifted / "lifted.safetensors"
    ).read_bytes()


def test_inria_cameras_json_gives_the_same_cameras(scene, tmp_path):
    from ovseg.fields.inria_cameras import load_inria_cameras, write_inria_cameras
    from ovseg.fields.posed_images import load_posed_images

    posed = load_posed_images(scene)
    write_inria_cameras(tmp_path / "cameras.json", posed)
    back = load_inria_cameras(tmp_path / "cameras.json", scene / "images")
    assert [c.name for c in back.cameras] == [c.name for c in posed.cameras]
    for a, b in zip(back.cameras, posed.cameras, strict=True):
        torch.testing.assert_close(a.world_to_camera, b.world_to_camera, atol=1e-5, rtol=0)
        assert (a.fx, a.cx, a.width) == pytest.approx((b.fx, b.cx, b.width))
    # images at half the trained size: the intrinsics follow
    half = tmp_path / "half"
    half.mkdir()
    for path in posed.image_paths:
        Image.open(path).resize((80, 64)).save(half / path.name)
    small = load_inria_cameras(tmp_path / "cameras.json", half)
    assert small.cameras[0].fx == pytest.approx(posed.cameras[0].fx / 2)
    assert small.cameras[0].width == 80


def test_lift_with_inria_cameras(scene, lifted, tmp_path):
    from ovseg.fields.inria_cameras import write_inria_cameras
    from ovseg.fields.posed_images import load_posed_images

    posed = load_posed_images(scene)
    posed.splits = {}  # cameras.json has no splits: every view is lifted
    write_inria_cameras(tmp_path / "cameras.json", posed)
    out = tmp_path / "field"
    cameras = str(tmp_path / "cameras.json")
    assert (
        main(
            [
                "lift",
                str(scene),
                "--cameras",
                cameras,
                "--splat",
                str(scene / "splat.ply"),
                "--out",
                str(out),
                *MODEL,
                "--no-progress",
            ]
        )
        == 0
    )
    meta = json.loads((out / "field.json").read_text())
    assert len(meta["train_views"]) == 5 and meta["cameras"].endswith("cameras.json")
    assert (
        main(
            [
                "query",
                str(out),
                "--text",
                "sand",
                "--view",
                "view_004",
                "--out",
                str(tmp_path / "q"),
                *MODEL,
            ]
        )
        == 0
    )


def test_bad_splats_and_cameras_are_refused(scene, tmp_path, capsys):
    import trimesh

    from ovseg.fields.splat_ply import read_splat, write_splat

    trimesh.creation.icosphere().export(tmp_path / "mesh.ply")
    out = tmp_path / "f"
    args = [str(scene), "--out", str(out), *MODEL, "--no-progress"]
    assert main(["lift", *args, "--splat", str(tmp_path / "mesh.ply")]) == 2
    assert "not a Gaussian splat" in _one_line_error(capsys)
    splat = read_splat(scene / "splat.ply")
    splat.cloud.means.data += torch.tensor([0.0, 0.0, 50.0])  # far above every camera
    write_splat(tmp_path / "far.ply", splat)
    assert main(["lift", *args, "--splat", str(tmp_path / "far.ply")]) == 2
    assert "sees none of the splat's 8000 Gaussians" in _one_line_error(capsys)
    assert main(["lift", *args, "--splat", str(tmp_path / "none.ply")]) == 2
    assert "no such file" in _one_line_error(capsys)
    assert not out.exists()


def test_a_folder_of_another_lift_or_a_changed_splat_is_refused(lifted, scene, tmp_path, capsys):
    import shutil

    other = tmp_path / "field"
    shutil.copytree(lifted, other)
    assert (
        main(
            [
                "lift",
                str(scene),
                "--splat",
                str(scene / "splat.ply"),
                "--out",
                str(other),
                "--mixture",
                "4",
                *MODEL,
                "--no-progress",
            ]
        )
        == 2
    )
    assert "holds a field made with another config" in _one_line_error(capsys)
    meta = json.loads((other / "field.json").read_text())
    meta["splat_bytes"] += 1
    (other / "field.json").write_text(json.dumps(meta))
    out = tmp_path / "q"
    assert main(["query", str(other), "--text", "sand", "--out", str(out), *MODEL]) == 2
    assert "gone or changed since" in _one_line_error(capsys)
    assert (
        main(
            [
                "query",
                str(lifted),
                "--text",
                "a",
                "--text",
                "b",
                "--extract",
                str(tmp_path / "x.ply"),
                "--out",
                str(out),
                *MODEL,
            ]
        )
        == 2
    )
    assert "one --text" in _one_line_error(capsys)
    assert not out.exists()


def test_keep_novel_segments_are_a_setting_of_the_folder(lifted, scene, tmp_path, capsys):
    """--keep-novel changes the panoptic segments lifted: recorded, and a folder made with the
    other rule is refused instead of mixing the two (folders made before the option resume)."""
    import shutil

    def lift(out, *flags):
        args = ["lift", str(scene), "--splat", str(scene / "splat.ply"), "--out", str(out)]
        return main([*args, *MODEL, "--no-progress", *flags])

    assert "keep_novel" not in json.loads((lifted / "field.json").read_text())
    other = tmp_path / "official"
    shutil.copytree(lifted, other)
    assert lift(other, "--keep-novel") == 2
    assert "holds a field made with another keep novel" in _one_line_error(capsys)
    assert lift(other) == 0  # the same rule: resumed
    kept = tmp_path / "keep_novel"
    assert lift(kept, "--keep-novel") == 0
    assert json.loads((kept / "field.json").read_text())["keep_novel"] is True
    assert lift(kept, "--no-keep-novel") == 2
    assert "another keep novel" in _one_line_error(capsys)


def test_views_in_per_camera_folders_keep_their_own_features(scene, tmp_path):
    """cam0/000.png and cam1/000.png: two views, two cached feature files, four names."""
    from ovseg.fields.posed_images import load_posed_images, write_transforms

    posed = load_posed_images(scene)
    posed.splits, paths = {}, []
    for index, path in enumerate(posed.image_paths[:4]):
        target = tmp_path / "scene" / f"cam{index // 2}" / f"{index % 2:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        paths.append(target)
    posed.cameras, posed.image_paths = posed.cameras[:4], paths
    write_transforms(posed, tmp_path / "scene" / "transforms.json")
    out = tmp_path / "field"
    assert (
        main(
            [
                "lift",
                str(tmp_path / "scene"),
                "--splat",
                str(scene / "splat.ply"),
                "--out",
                str(out),
                *MODEL,
                "--no-progress",
            ]
        )
        == 0
    )
    meta = json.loads((out / "field.json").read_text())
    assert meta["train_views"] == ["cam0/000", "cam0/001", "cam1/000", "cam1/001"]
    assert sorted(p.name for p in (out / "features").iterdir()) == [
        "cam0__000.npz",
        "cam0__001.npz",
        "cam1__000.npz",
        "cam1__001.npz",
    ]
    assert (
        main(
            [
                "query",
                str(out),
                "--text",
                "sand",
                "--view",
                "cam1/000",
                "--out",
                str(tmp_path / "q"),
                *MODEL,
            ]
        )
        == 0
    )
    assert (tmp_path / "q" / "cam1__000_1_sand_heatmap.png").is_file()


def test_one_door_opens_every_kind_of_field(lifted, tmp_path):
    from ovseg.fields.field import LanguageField
    from ovseg.fields.field4d import FORMAT as DYNAMIC
    from ovseg.fields.field4d import DynamicField
    from ovseg.fields.kinds import field_class, open_field
    from ovseg.fields.lift import LiftedField
    from ovseg.predictor import OVSegPredictor

    assert field_class(lifted) is LiftedField
    (tmp_path / "field.json").write_text(json.dumps({"format": DYNAMIC}))
    assert field_class(tmp_path) is DynamicField
    assert field_class(tmp_path / "nothing") is LanguageField  # its reader says what is wrong
    field = open_field(lifted, OVSegPredictor.from_pretrained("synthetic_tiny"))
    assert isinstance(field, LiftedField) and len(field.norms) == 8000


def test_an_empty_splat_writes_and_reads_but_is_not_lifted(scene, tmp_path, capsys):
    """An --extract that selects nothing is an empty but valid splat; lifting onto one is
    refused in one line, nothing written."""
    from ovseg.fields.splat_ply import read_splat, write_splat

    splat = read_splat(scene / "splat.ply")
    empty = splat.subset(torch.zeros(len(splat), dtype=torch.bool))
    write_splat(tmp_path / "empty.ply", empty)
    back = read_splat(tmp_path / "empty.ply")
    assert len(back) == 0 and back.cloud.sh.shape == (0, 16, 3)
    out = tmp_path / "f"
    assert (
        main(
            [
                "lift",
                str(scene),
                "--splat",
                str(tmp_path / "empty.ply"),
                "--out",
                str(out),
                *MODEL,
                "--no-progress",
            ]
        )
        == 2
    )
    assert "has no Gaussians" in _one_line_error(capsys)
    assert not out.exists()


def test_a_refined_lift_is_format_2_and_round_trips(lifted, scene, tmp_path):
    """--refine: field.json says format 2 and the settings read back as the LiftConfig given;
    the objective fell; the folder opens through the one door and answers a query; a format-1
    reader refuses it (it would ignore the corrections). A plain lift keeps format 1's keys."""
    from safetensors.torch import load_file

    from ovseg.fields.folders import FieldError, read_finished_meta
    from ovseg.fields.kinds import open_field
    from ovseg.fields.lift import FORMAT, LiftConfig, LiftedField
    from ovseg.predictor import OVSegPredictor

    plain = json.loads((lifted / "field.json").read_text())
    assert "refine_iterations" not in plain["config"]
    assert LiftConfig(**plain["config"]) == LiftConfig()
    out = tmp_path / "refined"
    args = ["lift", str(scene), "--splat", str(scene / "splat.ply"), "--out", str(out)]
    assert main([*args, *MODEL, "--no-progress", "--refine", "2", "--refine-rank", "4"]) == 0
    meta = json.loads((out / "field.json").read_text())
    assert meta["format"] == "ovseg-lifted-field/2" and "refine" in meta["timings_s"]
    assert LiftConfig(**meta["config"]) == LiftConfig(refine_iterations=2, refine_rank=4)
    first, second = meta["refine_objectives"]
    assert second < first
    assert not (out / "refine_state.npz").exists()
    tensors = load_file(out / "lifted.safetensors")
    assert tensors["refine_basis"].shape[0] == 4 and tensors["refine_offsets"].shape == (8000, 4)
    predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
    refined, before = open_field(out, predictor), LiftedField.load(lifted, predictor)
    assert isinstance(refined, LiftedField)
    text = predictor.text_encoder.encode_texts(["sand", "water"]).float()
    cosines, plain_cosines = refined.gaussian_cosines(text), before.gaussian_cosines(text)
    assert not torch.equal(cosines, plain_cosines)
    assert torch.corrcoef(torch.stack([cosines[0], plain_cosines[0]]))[0, 1] > 0.8
    with pytest.raises(FieldError, match="not an ovseg"):
        read_finished_meta(out, FORMAT, "lifted field (fields lift)", result="lifted.safetensors")
    assert main(["query", str(out), "--text", "sand", "--out", str(tmp_path / "q"), *MODEL]) == 0


@pytest.mark.parametrize("flags", [["--refine", "-1"], ["--refine-rank", "0"]])
def test_bad_refinement_settings_are_refused(scene, tmp_path, capsys, flags):
    out = tmp_path / "f"
    args = ["lift", str(scene), "--splat", str(scene / "splat.ply"), "--out", str(out)]
    assert main([*args, *MODEL, "--no-progress", *flags]) == 2
    assert "--refine >= 0 and --refine-rank >= 1" in _one_line_error(capsys)
    assert not out.exists()


def test_bench_lift_reuses_a_finished_lift_with_the_same_settings(lifted, scene):
    """bench-lift scores again without lifting again: the same settings reuse the folder;
    other settings would lift anew (here: refused, the folder holds another lift)."""
    from ovseg.fields.folders import FieldError
    from ovseg.fields.lift import LiftConfig
    from ovseg.synthetic.lift_report import _lift_once

    before = (lifted / "field.json").read_text()
    stamp = (lifted / "lifted.safetensors").stat().st_mtime_ns
    meta = _lift_once(scene, scene / "splat.ply", lifted, None, LiftConfig(), False)
    assert meta["complete"] and (lifted / "field.json").read_text() == before
    assert (lifted / "lifted.safetensors").stat().st_mtime_ns == stamp
    from ovseg.predictor import OVSegPredictor

    predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
    with pytest.raises(FieldError, match="another config"):
        _lift_once(scene, scene / "splat.ply", lifted, predictor, LiftConfig(mixture=4), False)
    novel = OVSegPredictor.from_pretrained("synthetic_tiny", keep_novel=True)
    with pytest.raises(FieldError, match="another keep novel"):  # not reused: other segments
        _lift_once(scene, scene / "splat.ply", lifted, novel, LiftConfig(), False)
