"""``ovseg fields``: a synthetic scene written, fitted and queried end to end with the shipped
model; a resumed fit; and every bad input refused in one line with nothing written."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.apps.fields import main

FIT = [
    "--model",
    "synthetic_tiny",
    "--iterations",
    "12",
    "--language-iterations",
    "10",
    "--no-progress",
]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from ovseg.synthetic.world3d import write_scene3d

    root = tmp_path_factory.mktemp("fields")
    return write_scene3d(root / "scene", 0, 0, train_views=3, test_views=1, width=64, height=48)


@pytest.fixture(scope="module")
def field(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("field") / "field"
    assert main(["fit", str(scene), "--out", str(out), *FIT]) == 0
    return out


def test_fit_writes_a_complete_field(field):
    meta = json.loads((field / "field.json").read_text())
    assert meta["complete"] and meta["model"] == "synthetic_tiny"
    assert meta["gaussians"] > 0 and set(meta["timings_s"]) == {
        "colour",
        "features",
        "autoencoder",
        "language",
    }
    assert sorted(p.name for p in (field / "features").iterdir()) == [
        "view_000.npz",
        "view_001.npz",
        "view_002.npz",
    ]


def test_query_writes_heat_maps_masks_and_ply(field, tmp_path, capsys):
    out = tmp_path / "q"
    code = main(
        [
            "query",
            str(field),
            "--text",
            "star",
            "--text",
            "water",
            "--out",
            str(out),
            "--ply",
            "--model",
            "synthetic_tiny",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "relevancy_1_star.ply",
        "relevancy_2_water.ply",
        "view_003_1_star_heatmap.png",
        "view_003_1_star_mask.png",
        "view_003_2_water_heatmap.png",
        "view_003_2_water_mask.png",
        "view_003_render.png",
    ]
    render = np.asarray(Image.open(out / "view_003_render.png"))
    assert render.shape == (48, 64, 3) and render.std() > 10  # a picture, not a flat colour
    mask = np.asarray(Image.open(out / "view_003_2_water_mask.png"))
    assert set(np.unique(mask)) <= {0, 255}
    import trimesh

    cloud = trimesh.load(out / "relevancy_1_star.ply", file_type="ply", process=False)
    assert len(cloud.vertices) > 0


def test_a_query_builds_the_text_tower_alone(field, tmp_path, monkeypatch):
    """A query needs phrase embeddings only: no image trunk, pixel decoder or transformer
    decoder is built (it built and loaded the whole FC-CLIP model), and the heat maps are
    those of the full model's text."""
    from ovseg.modeling.backbone import CLIPBackbone
    from ovseg.modeling.pixel_decoder import PixelDecoder
    from ovseg.modeling.transformer_decoder import TransformerDecoder

    args = ["query", str(field), "--text", "star", "--model", "synthetic_tiny"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0  # the reference, as built now

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a query built a {type(self).__name__}")

    for part in (CLIPBackbone, PixelDecoder, TransformerDecoder):
        monkeypatch.setattr(part, "__init__", refuse)
    assert main([*args, "--out", str(tmp_path / "text")]) == 0
    for name in ("view_003_1_star_heatmap.png", "view_003_1_star_mask.png"):
        full = np.asarray(Image.open(tmp_path / "full" / name))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "text" / name)), full)


@pytest.mark.parametrize("key", ["backbone.clip.ln_final.weight", "void_embedding.weight"])
def test_a_query_with_weights_that_do_not_fit_is_one_line(field, tmp_path, capsys, key):
    """Only the text tower is read: a wrong key there is named; one of the image network's
    is not read at all (the text, all a query uses, is the field's CLIP's)."""
    from safetensors.torch import load_file, save_file

    from ovseg import model_zoo

    tensors = load_file(model_zoo.local_weights("synthetic_tiny"))
    tensors[key + "s"] = tensors.pop(key)
    renamed = tmp_path / "renamed.safetensors"
    save_file(tensors, renamed)
    out = tmp_path / "q"
    args = ["query", str(field), "--text", "star", "--out", str(out)]
    code = main([*args, "--weights", str(renamed), "--config", "synthetic_tiny"])
    if key.startswith("backbone.clip."):
        assert code == 2
        error = _one_line_error(capsys)
        assert str(renamed) in error and f"1 missing: {key} " in error
        assert not out.exists()
    else:
        assert code == 0 and (out / "view_003_1_star_heatmap.png").is_file()


def test_query_by_view_name_and_size(field, tmp_path):
    out = tmp_path / "q"
    assert (
        main(
            [
                "query",
                str(field),
                "--text",
                "sand",
                "--view",
                "view_001",
                "--size",
                "32",
                "--out",
                str(out),
                "--model",
                "synthetic_tiny",
            ]
        )
        == 0
    )
    assert Image.open(out / "view_001_render.png").size == (32, 24)


def test_an_interrupted_fit_resumes(scene, tmp_path, one_thread):
    from ovseg.fields.field import FieldConfig, fit_field
    from ovseg.fields.fit import FitConfig, LatentFitConfig
    from ovseg.predictor import OVSegPredictor

    predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
    cfg = FieldConfig(
        colour=FitConfig(
            iterations=8, densify_from=4, densify_until=6, densify_every=2, checkpoint_every=4
        ),
        language=LatentFitConfig(iterations=6, checkpoint_every=3),
        autoencoder_iterations=50,
    )
    straight = fit_field(scene, tmp_path / "a", predictor, cfg, progress=False)
    # a run stopped inside the colour stage, after its first checkpoint (iteration 4 of 8)
    from ovseg.fields.fit import fit_rgb
    from ovseg.fields.gaussians import GaussianCloud
    from ovseg.fields.posed_images import load_posed_images
    from ovseg.fields.stages import load_views

    posed = load_posed_images(scene)
    cloud = GaussianCloud.from_points(posed.points, posed.colours, latent_dim=3)
    partial = tmp_path / "b"
    views = load_views(posed, posed.split("train"))
    stopped = fit_rgb(
        cloud, views, cfg.colour, checkpoint=partial / "colour.pt", max_steps=4, progress=False
    )
    assert stopped["iteration"] == 4
    resumed = fit_field(scene, partial, predictor, cfg, progress=False)
    assert resumed["complete"] and resumed["gaussians"] == straight["gaussians"]
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "gaussians.safetensors")
    b = load_file(partial / "gaussians.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_a_missing_scene_is_refused(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope"), "--out", str(tmp_path / "f"), *FIT]) == 2
    assert "no such file" in _one_line_error(capsys)
    assert not (tmp_path / "f").exists()


def test_missing_images_and_nan_poses_are_refused(scene, tmp_path, capsys):
    import shutil

    broken = tmp_path / "scene"
    shutil.copytree(scene, broken)
    (broken / "images" / "view_001.png").unlink()
    assert main(["fit", str(broken), "--out", str(tmp_path / "f"), *FIT]) == 2
    assert "view_001.png is missing" in _one_line_error(capsys)
    shutil.copy(scene / "images" / "view_001.png", broken / "images" / "view_001.png")
    meta = json.loads((broken / "transforms_train.json").read_text())
    meta["frames"][1]["transform_matrix"][0][3] = math.nan
    (broken / "transforms_train.json").write_text(json.dumps(meta))
    assert main(["fit", str(broken), "--out", str(tmp_path / "f"), *FIT]) == 2
    assert "NaN" in _one_line_error(capsys)
    assert not (tmp_path / "f").exists()


def test_a_camera_that_sees_nothing_is_refused(scene, tmp_path, capsys):
    import shutil

    broken = tmp_path / "scene"
    shutil.copytree(scene, broken)
    meta = json.loads((broken / "transforms_train.json").read_text())
    # below the ground, looking further down (OpenGL cameras look along their -z)
    meta["frames"][2]["transform_matrix"] = np.eye(4).tolist()
    meta["frames"][2]["transform_matrix"][2][3] = -5.0
    (broken / "transforms_train.json").write_text(json.dumps(meta))
    assert main(["fit", str(broken), "--out", str(tmp_path / "f"), *FIT]) == 2
    assert "sees none of the scene's points" in _one_line_error(capsys)
    assert not (tmp_path / "f").exists()


def test_a_field_from_another_model_is_refused(field, tmp_path, capsys):
    import shutil

    other = tmp_path / "field"
    shutil.copytree(field, other)
    meta = json.loads((other / "field.json").read_text())
    meta["clip_fingerprint"], meta["model"] = "0123456789abcdef", "fcclip_convnext_large_coco"
    (other / "field.json").write_text(json.dumps(meta))
    out = tmp_path / "q"
    code = main(
        ["query", str(other), "--text", "star", "--out", str(out), "--model", "synthetic_tiny"]
    )
    assert code == 2
    assert "fitted with model 'fcclip_convnext_large_coco'" in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "file, key",
    [("autoencoder.safetensors", "encoder.0.weight"), ("gaussians.safetensors", "latents")],
)
def test_a_field_file_with_a_wrong_key_is_one_line_naming_the_file_and_keys(
    field, tmp_path, capsys, file, key
):
    """Every weights file goes through ovseg.checkpoint's loader: a renamed tensor is one
    line with the file, the missing and the unexpected key (was torch's many-line
    RuntimeError, or a bare KeyError)."""
    import shutil

    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "field"
    shutil.copytree(field, damaged)
    tensors = load_file(damaged / file)
    tensors[key + "_renamed"] = tensors.pop(key)
    save_file(tensors, damaged / file)
    out = tmp_path / "q"
    code = main(
        ["query", str(damaged), "--text", "star", "--out", str(out), "--model", "synthetic_tiny"]
    )
    assert code == 2
    error = _one_line_error(capsys)
    assert str(damaged / file) in error
    assert f"1 missing: {key}" in error and f"1 unexpected: {key}_renamed" in error
    assert not out.exists()


def test_unfinished_and_missing_fields_and_empty_phrases_are_refused(field, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["query", str(tmp_path), "--text", "x", "--out", str(out)]) == 2
    assert "no field.json" in _one_line_error(capsys)
    assert main(["query", str(field), "--text", " ", "--out", str(out)]) == 2
    assert "empty" in _one_line_error(capsys)
    assert (
        main(
            [
                "query",
                str(field),
                "--text",
                "x",
                "--view",
                "nope",
                "--out",
                str(out),
                "--model",
                "synthetic_tiny",
            ]
        )
        == 2
    )
    assert "no view named nope" in _one_line_error(capsys)
    assert not out.exists()


def test_a_scene_without_points_is_refused(scene, tmp_path, capsys):
    from ovseg.fields.posed_images import load_posed_images, write_colmap

    posed = load_posed_images(scene)
    posed.points = posed.colours = None
    colmap = tmp_path / "colmap"
    (colmap / "images").mkdir(parents=True)
    for path in posed.image_paths:
        (colmap / "images" / path.name).write_bytes(path.read_bytes())
    write_colmap(posed, colmap / "sparse" / "0")
    assert main(["fit", str(colmap), "--out", str(tmp_path / "f"), *FIT]) == 2
    assert "no 3D points" in _one_line_error(capsys)
    assert not (tmp_path / "f").exists()


def test_sam_levels_fit_and_query(scene, tmp_path):
    """Two mask levels (panoptic segments and the prompt head's small masks): a latent of
    3 channels each, and each phrase answered at the level where it peaks."""
    out = tmp_path / "field"
    assert main(["fit", str(scene), "--out", str(out), *FIT, "--levels", "panoptic,small"]) == 0
    from safetensors.torch import load_file

    from ovseg.fields.field import LanguageField
    from ovseg.predictor import OVSegPredictor

    assert load_file(out / "gaussians.safetensors")["latents"].shape[1] == 6
    saved = np.load(out / "features" / "view_000.npz")
    assert {"panoptic_map", "small_map", "small_embeddings"} <= set(saved.files)
    field = LanguageField.load(out, OVSegPredictor.from_pretrained("synthetic_tiny"))
    camera = field.scene().cameras[0]
    result = field.relevancy(camera, ["water", "star"])
    assert result["relevancy"].shape == (2, 48, 64)
    assert set(result["levels"]) <= {"panoptic", "small"}
    for k, level in enumerate(result["levels"]):  # the chosen level's map, unchanged
        index = field.levels.index(level)
        phrases, canonical = field._text(["water", "star"])
        from ovseg.fields.language import latent_relevancy

        alone = latent_relevancy(
            field.autoencoder,
            field.level_latents(result["latent"], index),
            phrases[k : k + 1],
            canonical,
        )[0]
        torch.testing.assert_close(result["relevancy"][k], alone)


def test_sam_levels_need_a_prompt_head(parity_predictor):
    from ovseg.fields.language import view_levels

    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="need a model with a prompt head"):
        view_levels(parity_predictor, image, ("small",))
    with pytest.raises(ValueError, match="unknown mask level huge"):
        view_levels(parity_predictor, image, ("huge",))


def test_unknown_levels_are_refused_before_anything_runs(scene, tmp_path, capsys):
    assert main(["fit", str(scene), "--out", str(tmp_path / "f"), *FIT, "--levels", "tiny"]) == 2
    assert "--levels: unknown" in _one_line_error(capsys)
    assert not (tmp_path / "f").exists()


def test_the_language_iterations_default_to_visits_of_the_training_views(
    scene, tmp_path, monkeypatch
):
    import ovseg.fields.fit

    asked = []
    monkeypatch.setattr(
        ovseg.fields.fit, "language_iterations", lambda views: asked.append(views) or 7
    )
    out = tmp_path / "field"
    assert (
        main(
            [
                "fit",
                str(scene),
                "--out",
                str(out),
                "--model",
                "synthetic_tiny",
                "--iterations",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    meta = json.loads((out / "field.json").read_text())
    assert asked == [3] and meta["config"]["language"]["iterations"] == 7
