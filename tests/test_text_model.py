"""The text half of a model (``ovseg.predictor.TextModel``, what ``ovseg fields query``
loads): no image network, and the predictor's text embeddings and fingerprint bit for bit."""

import pytest
import torch

from conftest import PARITY_WEIGHTS
from ovseg.checkpoint import WeightsError
from ovseg.config import CONFIG_DIR
from ovseg.predictor import OVSegPredictor, TextModel

PHRASES = ["star", "a red star", "water", "object", "things", "stuff", "texture", "x " * 60]


def _learned_context_model(folder):
    """A random tiny model with two learned context vectors: its weights and its config."""
    from ovseg.checkpoint import save_weights
    from ovseg.config import load_config
    from ovseg.modeling.fcclip import build_model

    preset = (CONFIG_DIR / "fcclip_tiny_test.yaml").read_text()
    preset = preset.replace("clip/ovseg_parity", str(CONFIG_DIR / "clip" / "ovseg_parity"))
    config = folder / "context.yaml"
    config.write_text(preset + "text_context:\n  learnable_context: 2\n")
    torch.manual_seed(0)
    model = build_model(load_config(config))
    save_weights(model.state_dict(), folder / "context.safetensors")
    return folder / "context.safetensors", config


@pytest.mark.parametrize("kind", ["zoo safetensors", "official .pth", "learned context"])
def test_the_text_half_embeds_as_the_predictor_does(kind, tmp_path):
    if kind == "zoo safetensors":
        source = {"model": "synthetic_tiny"}
    elif kind == "official .pth":
        source = {"weights": PARITY_WEIGHTS, "config": "fcclip_tiny_parity"}
    else:
        weights, config = _learned_context_model(tmp_path)
        source = {"weights": weights, "config": config}
    predictor = OVSegPredictor.from_pretrained(**source, use_disk_text_cache=False)
    text_model = TextModel.from_pretrained(**source, use_disk_text_cache=False)
    assert (text_model.text_encoder.context is None) == (kind != "learned context")
    expected = predictor.text_encoder.encode_texts(PHRASES)
    assert torch.equal(text_model.text_encoder.encode_texts(PHRASES), expected)
    text = text_model.text_encoder.backbone
    assert text.text_fingerprint() == predictor.model.backbone.text_fingerprint()
    assert text.embed_dim == predictor.model.backbone.embed_dim
    assert text_model.model_name == predictor.model_name
    assert text.clip.visual is None  # no image tower in memory
    names = {name for name, _ in text_model.text_encoder.backbone.named_parameters()}
    assert names and not any("visual" in name for name in names)


def test_a_text_tower_key_that_does_not_fit_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    from ovseg import model_zoo

    tensors = load_file(model_zoo.local_weights("synthetic_tiny"))
    tensors["backbone.clip.ln_final.weights"] = tensors.pop("backbone.clip.ln_final.weight")
    del tensors["pixel_decoder.mask_features.weight"]  # the image network: not read
    renamed = tmp_path / "renamed.safetensors"
    save_file(tensors, renamed)
    with pytest.raises(WeightsError) as error:
        TextModel.from_pretrained(weights=renamed, config="synthetic_tiny")
    message = str(error.value)
    assert str(renamed) in message and "\n" not in message
    assert "1 missing: backbone.clip.ln_final.weight " in message
    assert "1 unexpected: backbone.clip.ln_final.weights)" in message
