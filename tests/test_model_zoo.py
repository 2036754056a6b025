"""Model zoo downloads (atomic, checksummed) and building from any open_clip ConvNeXt."""

import dataclasses
import hashlib

import pytest

from ovseg import model_zoo
from ovseg.config import config_from_dict, load_config
from ovseg.modeling.fcclip import build_model


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    source = tmp_path / "release.pth"
    source.write_bytes(b"weights" * 1000)
    entry = model_zoo.ZooEntry(
        name="fake",
        config="fcclip_tiny_parity",
        filename="fake.pth",
        description="test",
        url=source.as_uri(),
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(model_zoo.MODEL_ZOO, "fake", entry)
    return entry


def test_download_is_atomic_and_checksummed(fake_entry, monkeypatch):
    path = model_zoo.download_weights("fake", progress=False)
    assert path == model_zoo.weights_dir() / "fake.pth" and path.read_bytes().startswith(b"w")
    assert model_zoo.local_weights("fake") == path
    path.unlink()
    bad = dataclasses.replace(fake_entry, sha256="0" * 64)
    monkeypatch.setitem(model_zoo.MODEL_ZOO, "fake", bad)
    with pytest.raises(ValueError, match="checksum mismatch"):
        model_zoo.download_weights("fake", progress=False)
    # no partial file left beside the parity fixture's weights (tests/conftest.py)
    assert [p.name for p in model_zoo.weights_dir().iterdir()] == ["fcclip_tiny_official.pth"]


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="fcclip_convnext_large_coco"):
        model_zoo.get_entry("nope")


def test_hyphenated_names_are_the_same_entry():
    assert model_zoo.get_entry("synthetic-tiny") is model_zoo.get_entry("synthetic_tiny")
    assert model_zoo.local_weights("synthetic-tiny") is not None  # shipped in the repository


@pytest.mark.parametrize(
    "name,channels,embed",
    [
        ("convnext_large_d_320", [192, 384, 768, 1536], 768),
        ("convnext_base_w", [128, 256, 512, 1024], 640),
    ],
)
def test_any_open_clip_convnext_by_config(name, channels, embed):
    cfg = config_from_dict({"clip": {"model_name": name}})
    model = build_model(cfg, device="meta")
    assert list(model.backbone.feature_channels.values()) == channels
    assert model.backbone.embed_dim == embed
    assert model.void_embedding.weight.shape == (1, embed)
    assert model.transformer_decoder.class_embed.layers[-1].out_features == embed


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pixel_decoder:\n  conv_dims: 64\n")
    with pytest.raises(ValueError, match="pixel_decoder.conv_dims"):
        load_config(path)
