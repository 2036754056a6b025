"""A folder at throughput: images read ahead, encoded together where they resize alike
(``--batch-size``), outputs written beside the network; the same outputs as one at a time."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main
from ovseg.apps.predict import main

TINY = ["--model", "fcclip_tiny_parity", "--short-side", "64", "--precision", "fp32"]


def save(path, height=48, width=80, seed=0):
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return path


def test_a_batched_folder_gives_the_outputs_of_one_at_a_time(tmp_path, capsys, monkeypatch):
    from ovseg.predictor_base import PredictorBase

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(7):  # two sizes, interleaved: batches hold one size only
        height, width = (48, 80) if index % 3 else (80, 48)
        save(folder / f"{index}.png", height, width, seed=index)
    batches = []
    real = PredictorBase._encode_batch

    def counted(self, arrays, resized_hw):
        batches.append((len(arrays), resized_hw))
        return real(self, arrays, resized_hw)

    monkeypatch.setattr(PredictorBase, "_encode_batch", counted)
    args = [folder, "--classes", "cat, sky, road", *TINY, "--threads", "1"]
    assert run_main(main, [*args, "--output", tmp_path / "one"], capsys)[0] == 0
    assert [n for n, _ in batches] == [1] * 7
    batches.clear()
    assert (
        run_main(main, [*args, "--output", tmp_path / "four", "--batch-size", "4"], capsys)[0] == 0
    )
    # chunks 0-3 and 4-6; sizes: 0 tall, 1-2 wide, 3 tall | 4-5 wide, 6 tall
    assert [n for n, _ in batches] == [1, 2, 1, 2, 1]
    for one in sorted((tmp_path / "one").iterdir()):
        four = tmp_path / "four" / one.name
        if one.suffix == ".png":  # overlays and label maps: the same pixels
            assert np.array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(four)))
            continue
        a, b = json.loads(one.read_text()), json.loads(four.read_text())
        assert [s["class"] for s in a["segments"]] == [s["class"] for s in b["segments"]]
        for x, y in zip(a["segments"], b["segments"], strict=True):
            assert x["area"] == y["area"] and x["score"] == pytest.approx(y["score"], abs=1e-5)


def test_encode_many_batches_consecutive_images_of_one_size_and_caches_them():
    from ovseg.config import load_config
    from ovseg.modeling.fcclip import build_model
    from ovseg.predictor import OVSegPredictor

    cfg = load_config("fcclip_tiny_test")
    torch.manual_seed(0)
    predictor = OVSegPredictor(build_model(cfg), cfg, precision="fp32", feature_cache_size=8)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(3)]
    images.insert(1, rng.integers(0, 255, (60, 40, 3), dtype=np.uint8))
    images.append(images[0])  # a repeat is encoded once
    together = predictor.encode_many(images, short_side=64, batch_size=3)
    assert predictor.image_encodes == 4 and len(together) == 5
    assert together[4] is together[0]
    predictor.clear_cache()
    for image, features in zip(images, together, strict=True):
        alone = predictor.encode(image, short_side=64)
        assert features.pred_masks.shape == alone.pred_masks.shape
        torch.testing.assert_close(features.pred_masks, alone.pred_masks, rtol=1e-4, atol=1e-4)
    before = predictor.image_encodes
    predictor.encode(images[3], short_side=64)  # cached by encode_many
    assert predictor.image_encodes == before
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        predictor.encode_many(images, batch_size=0)


def test_a_batch_size_below_one_is_one_line(tmp_path, capsys):
    image = save(tmp_path / "photo.png")
    out = tmp_path / "out"
    args = [image, "--classes", "cat", "--output", out, *TINY, "--batch-size", "0"]
    code, _, err = run_main(main, args, capsys)
    assert code == 2 and err.strip() == "error: --batch-size must be at least 1"
    assert not out.exists()
