"""Pixel-text matching on the frozen CLIP: per-location embeddings, score maps, relevancy heat
maps (API and command line) and the training-free pixel-text semantic output."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import run_main
from ovseg.apps.predict import main
from ovseg.modeling.pixel_text import dense_clip_embeddings, pixel_text_logits, relevancy
from ovseg.modeling.text_classifier import TextClassifier

TINY = ["--model", "fcclip_tiny_parity", "--short-side", "64"]


def test_a_pixel_whose_embedding_is_a_class_text_gets_that_class():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(5, 16), dim=-1)  # 3 classes: 2 + 1 + 2 synonyms
    classifier = TextClassifier(text, [2, 1, 2])
    pixels = F.normalize(torch.randn(1, 16, 3, 4), dim=1)
    for row, (y, x) in enumerate([(0, 0), (1, 2), (2, 3), (0, 3), (2, 1)]):
        pixels[0, :, y, x] = text[row]
    logits = pixel_text_logits(pixels, classifier, torch.tensor(np.log(100.0)))
    assert logits.shape == (1, 3, 3, 4)
    labels = logits[0].argmax(0)
    assert [int(labels[y, x]) for y, x in [(0, 0), (1, 2), (2, 3), (0, 3), (2, 1)]] == [
        0,
        0,
        1,
        2,
        2,
    ]
    # a class's score is its best synonym's cosine x 100
    best = (pixels[0, :, 1, 1] @ text[:2].T).max() * 100
    assert torch.allclose(logits[0, 0, 1, 1], best, atol=1e-5)


def test_relevancy_is_langsplats_pairwise_softmax_at_the_worst_canonical_phrase():
    torch.manual_seed(1)
    pixels = F.normalize(torch.randn(2, 8, 3, 5), dim=1)
    phrases = F.normalize(torch.randn(3, 8), dim=-1)
    canonical = F.normalize(torch.randn(4, 8), dim=-1)
    ours = relevancy(pixels, phrases, canonical)
    # LangSplat's get_relevancy: softmax(10 [q.x, c_i.x]) per canonical phrase, the pair with
    # the lowest phrase share kept
    x = pixels.permute(0, 2, 3, 1).reshape(-1, 8)
    for p in range(3):
        q = (x @ phrases[p])[:, None].expand(-1, 4)
        c = x @ canonical.T
        share = torch.softmax(10 * torch.stack([q, c], dim=-1), dim=-1)[..., 0]
        expected = share.min(dim=1).values.reshape(2, 3, 5)
        assert torch.allclose(ours[:, p], expected, atol=1e-6)


def test_each_location_is_embedded_as_mask_pooling_embeds_a_one_cell_mask(parity_predictor):
    image = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    features = parity_predictor.encode(image, short_side=64)
    dense = dense_clip_embeddings(parity_predictor.model.backbone, features.clip_dense)
    assert dense.shape[-2:] == features.clip_dense.shape[-2:]
    assert torch.allclose(dense.norm(dim=1), torch.ones(1), atol=1e-5)
    # a mask covering exactly cell (1, 2) of the stride-32 grid (the image is not resized)
    mask = np.zeros((1, 64, 96), dtype=bool)
    mask[0, 32:64, 64:96] = True
    pooled = parity_predictor.pool_masks(features, mask)[0]
    assert torch.allclose(pooled, dense[0, :, 1, 2], atol=1e-5)


def test_heatmaps_reuse_the_image_features_and_give_relevancy_at_the_image_size(
    parity_predictor,
):
    image = (np.random.default_rng(2).random((50, 70, 3)) * 255).astype(np.uint8)
    maps = parity_predictor.heatmap(image, ["red car", "sky"], short_side=64)
    assert maps.shape == (2, 50, 70) and maps.dtype == np.float32
    assert 0 < maps.min() and maps.max() < 1
    before = parity_predictor.image_encodes
    again = parity_predictor.heatmap(image, "sky", short_side=64)
    assert parity_predictor.image_encodes == before  # only text was new
    assert np.allclose(again[0], maps[1], atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        parity_predictor.heatmap(image, ["cat", "  "])


def test_pixel_text_semantic_is_class_probabilities_at_the_image_size(parity_predictor):
    image = (np.random.default_rng(3).random((40, 60, 3)) * 255).astype(np.uint8)
    result = parity_predictor.predict(
        image, vocabulary=["cat", "dog", "sky"], tasks="semantic", head="pixel-text", short_side=64
    )
    assert result["sem_seg"].shape == (3, 40, 60)
    assert torch.allclose(result["sem_seg"].sum(0), torch.ones(40, 60), atol=1e-5)
    with pytest.raises(ValueError, match="semantic output only"):
        parity_predictor.predict(image, tasks="panoptic", head="pixel-text")


def test_heatmap_command_writes_one_picture_per_phrase(image, tmp_path, capsys):
    out = tmp_path / "out"
    args = [image, *TINY, "--heatmap", "red car", "--heatmap", "斑马", "--output", out]
    code, _, err = run_main(main, args, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "photo.json",
        "photo_heatmap_1_red-car.png",
        "photo_heatmap_2.png",
    ]
    record = json.loads((out / "photo.json").read_text())
    assert record["task"] == "heatmap"
    assert "RANDOM weights" in record["model_caveat"]  # said in heat-map-only JSON too
    assert [h["phrase"] for h in record["heatmaps"]] == ["red car", "斑马"]
    assert all(0 < h["peak_relevancy"] < 1 for h in record["heatmaps"])
    picture = Image.open(out / "photo_heatmap_1_red-car.png")
    assert picture.width == 80 and picture.height > 48  # the image, then the caption
    assert "peak" in err
    # with classes: the segmentation files too, and the heat maps in the same record
    code, _, err = run_main(
        main, [*args, "--classes", "cat, dog", "--task", "semantic", "--overwrite"], capsys
    )
    assert code == 0, err
    record = json.loads((out / "photo.json").read_text())
    assert record["task"] == "semantic" and len(record["heatmaps"]) == 2
    assert (out / "photo_overlay.png").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--heatmap", "  "], "a heat-map phrase is empty"),
        (["--classes", "cat", "--head", "pixel-text"], "add --task semantic"),
        ([], "name the classes with --classes or --vocab"),
    ],
)
def test_bad_heatmap_and_head_input_is_one_line_and_writes_nothing(
    image, tmp_path, capsys, extra, message
):
    out = tmp_path / "out"
    code, _, err = run_main(main, [image, *TINY, *extra, "--output", out], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err
    assert not out.exists()


def test_pixel_text_head_on_the_command_line(image, tmp_path, capsys):
    out = tmp_path / "out"
    args = [image, *TINY, "--classes", "cat, dog", "--task", "semantic", "--head", "pixel-text"]
    code, _, err = run_main(main, [*args, "--output", out], capsys)
    assert code == 0, err
    record = json.loads((out / "photo.json").read_text())
    assert record["head"] == "pixel-text" and record["settings"]["head"] == "pixel-text"
    assert {s["class"] for s in record["segments"]} <= {"cat", "dog"}


def test_web_heat_map_tab_without_a_browser(parity_predictor):
    from ovseg.apps.web import Demo
    from ovseg.apps.web_heatmap import heatmap_pictures, split_phrases

    assert split_phrases("red car, left; sky\n\n tree ") == ["red car, left", "sky", "tree"]
    with pytest.raises(ValueError, match="type a phrase"):
        split_phrases(" ;\n ")
    with pytest.raises(ValueError, match="at most 8"):
        split_phrases(";".join("abcdefghi"))
    demo = Demo(parity_predictor, model_note="test")
    image = (np.random.default_rng(4).random((40, 60, 3)) * 255).astype(np.uint8)
    try:
        picture, status = heatmap_pictures(demo, image, "cat; blue sky")
        assert picture.shape[1] == 60 * 2 + 8 and picture.shape[0] > 40  # two side by side
        assert "2 heat map(s)" in status
        _, status = heatmap_pictures(demo, image, "dog")
        assert "image features reused" in status
    finally:
        demo.close()
