"""Context-aware text (DenseCLIP's learned context and visual-context decoder, MAFT+'s CDT) and
the pixel-text auxiliary loss: known answers on a tiny text tower, identity at initialisation,
class-permutation equivariance, gradients to the new parts only, and a training run."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ovseg.config import TextContextConfig, load_config
from ovseg.modeling.text_classifier import TextClassifier
from ovseg.modeling.text_context import (
    ContentDependentTransfer,
    LearnableContext,
    TextContext,
    VisualContextDecoder,
)
from ovseg.train.losses import semantic_targets


def test_context_insertion_and_end_of_text_equal_a_manual_prompt(parity_predictor):
    backbone = parity_predictor.model.backbone
    words = backbone.tokenize(["a photo of a"])[0]
    count = int(words.argmax()) - 1  # tokens between start and end of text
    context = LearnableContext(backbone.clip.token_embedding.weight.shape[1], count)
    with torch.no_grad():  # context = the word embeddings of "a photo of a"
        context.context.copy_(backbone.clip.token_embedding(words[1 : 1 + count]))
    names = ["cat", "traffic cone", "a very long name of a small thing"]  # EOT at 3 places
    ours = context(backbone, context.tokens(backbone, names))
    manual = backbone.encode_text(backbone.tokenize([f"a photo of a {n}." for n in names]))
    assert torch.allclose(ours, F.normalize(manual, dim=-1), atol=1e-5)
    # and the context is what is learnt: it gets gradients, the tower does not
    ours.sum().backward()
    assert context.context.grad is not None and context.context.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_visual_context_decoder_with_gamma_zero_is_the_identity_and_permutes_with_classes():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(5, 16), dim=-1)
    visual = torch.randn(2, 7, 16)
    decoder = VisualContextDecoder(16, layers=2, width=32, heads=4, gamma_init=0.0)
    assert torch.equal(decoder(text, visual), text[None].expand(2, -1, -1))
    decoder = VisualContextDecoder(16, layers=2, width=32, heads=4, gamma_init=0.5).eval()
    out = decoder(text, visual)
    assert not torch.allclose(out, text[None].expand(2, -1, -1))
    order = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(decoder(text[order], visual), out[:, order], atol=1e-6)


def test_cdt_starts_as_the_identity_and_reads_the_image_once_trained():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(4, 16), dim=-1)
    dense = F.normalize(torch.randn(2, 16, 3, 5), dim=1)
    cdt = ContentDependentTransfer(16, heads=4)
    assert torch.equal(cdt(text, dense), text[None].expand(2, -1, -1))
    torch.nn.init.normal_(cdt.attention.out_proj.weight, std=0.5)
    out = cdt(text, dense)
    assert not torch.allclose(out[0], out[1])  # each image its own classifier


def with_text_context(predictor, cfg: TextContextConfig):
    """A copy of the predictor whose model has a text context of ``cfg``."""
    other = copy.copy(predictor)
    other.model = copy.deepcopy(predictor.model)
    backbone = other.model.backbone
    torch.manual_seed(0)
    other.model.text_context = TextContext(
        cfg,
        token_width=backbone.clip.token_embedding.weight.shape[1],
        embed_dim=backbone.embed_dim,
        mask_dim=other.model.pixel_decoder.mask_dim,
    ).eval()
    other._features = type(predictor._features)()
    return other


def test_an_untrained_visual_decoder_and_cdt_give_exactly_the_baseline(parity_predictor):
    cfg = TextContextConfig(visual_context_layers=1, visual_context_gamma=0.0, cdt=True)
    adapted = with_text_context(parity_predictor, cfg)
    image = (torch.rand(48, 64, 3) * 255).byte().numpy()
    vocabulary = ["cat", "dog/puppy", "sky"]
    base = parity_predictor.predict(image, vocabulary=vocabulary, tasks="panoptic")
    ours = adapted.predict(image, vocabulary=vocabulary, tasks="panoptic")
    assert torch.allclose(ours["class_logits"], base["class_logits"], atol=1e-5)
    assert torch.equal(ours["panoptic_seg"], base["panoptic_seg"])


def test_gradients_reach_every_new_part_and_never_the_frozen_clip(parity_predictor):
    cfg = TextContextConfig(
        learnable_context=2, visual_context_layers=1, cdt=True, pixel_text_loss_weight=1.0
    )
    model = with_text_context(parity_predictor, cfg).model
    # CDT's zero output projection passes no gradient to its inputs at first: start it off zero
    torch.nn.init.normal_(model.text_context.cdt.attention.out_proj.weight, std=0.1)
    model.train()
    backbone = model.backbone
    names = ["cat", "dog", "sky"]
    tokens = model.text_context.context.tokens(backbone, names)
    classifier = TextClassifier(torch.zeros(3, backbone.embed_dim), [1, 1, 1], tokens)
    images = torch.randn(2, 3, 64, 64)
    outputs = model(images, classifier)
    assert outputs["pixel_text_logits"].shape == (2, 3, 16, 16)
    assert outputs["out_vocab_logits"].shape == outputs["pred_logits"].shape
    loss = (
        outputs["pred_logits"].logsumexp(-1).mean()
        + outputs["out_vocab_logits"].logsumexp(-1).mean()
        + outputs["pixel_text_logits"].logsumexp(1).mean()
    )
    loss.backward()
    context = model.text_context
    for name, part in [
        ("context", context.context),
        ("visual decoder", context.visual_decoder),
        ("cdt", context.cdt),
        ("pixel projection", context.pixel_proj),
    ]:
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
    assert all(p.grad is None for p in backbone.parameters())


def test_semantic_targets_put_each_mask_label_and_void_elsewhere():
    masks = torch.zeros(2, 4, 5)
    masks[0, :2] = 1
    masks[1, 3, 4] = 1
    targets = [
        {"masks": masks, "labels": torch.tensor([2, 0])},
        {"masks": torch.zeros(0, 4, 5), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    semantic = semantic_targets(targets, 2)
    assert semantic[0, :2].eq(2).all() and semantic[0, 3, 4] == 0
    assert semantic[0, 2].eq(255).all() and semantic[1].eq(255).all()


def test_training_with_every_text_context_part_runs_and_saves_them(tmp_path):
    from ovseg.data import LargeScaleJitter, PanopticDataset
    from ovseg.synthetic.scenes import write_synthetic_panoptic
    from ovseg.train.loop import TrainConfig, train
    from ovseg.train.state import latest_checkpoint, load_training_state

    json_path = write_synthetic_panoptic(tmp_path / "data", 4, size=(64, 80), seed=0)
    split = Path(json_path).parent
    dataset = PanopticDataset(split / "images", json_path, split / "panoptic")
    model_cfg = load_config("fcclip_tiny_test")
    model_cfg = dataclasses.replace(
        model_cfg,
        text_context=TextContextConfig(
            learnable_context=2,
            visual_context_layers=1,
            visual_context_width=32,
            cdt=True,
            cdt_heads=2,
            pixel_text_loss_weight=1.0,
        ),
    )
    cfg = TrainConfig(
        max_iters=4,
        batch_size=2,
        crop_size=64,
        num_points=64,
        checkpoint_every=4,
        log_every=1,
        num_workers=0,
        seed=0,
        warmup_iters=1,
    )
    out = tmp_path / "run"
    train(model_cfg, cfg, dataset, out, transform=LargeScaleJitter(crop_size=64), progress=False)
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert "loss_cdt" in json.dumps(record) and "loss_pixeltext" in json.dumps(record)
    saved = load_training_state(latest_checkpoint(out / "checkpoints"))["model"]
    for prefix in ("context.", "visual_decoder.", "cdt.", "pixel_proj."):
        assert any(k.startswith("text_context." + prefix) for k in saved), prefix


@pytest.mark.parametrize("bad", [{"learnable_context": -1}])
def test_bad_text_context_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        LearnableContext(8, bad["learnable_context"])


def test_a_model_with_a_text_context_saves_and_loads_its_new_weights(tmp_path):
    import yaml

    from ovseg.checkpoint import save_weights
    from ovseg.config import config_to_dict
    from ovseg.modeling.fcclip import build_model
    from ovseg.predictor import OVSegPredictor

    cfg = load_config("fcclip_tiny_test")
    cfg = dataclasses.replace(
        cfg, text_context=TextContextConfig(learnable_context=3, cdt=True, cdt_heads=2)
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    state = model.state_dict()
    assert "text_context.context.context" in state
    assert any(k.startswith("text_context.cdt.") for k in state)
    save_weights(state, tmp_path / "model.safetensors")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    loaded = OVSegPredictor.from_pretrained(
        weights=tmp_path / "model.safetensors", config=tmp_path / "config.yaml"
    )
    assert torch.equal(
        loaded.model.text_context.context.context, model.text_context.context.context
    )
    # the predictor's text comes through the learned context, not the templates
    vocabulary = loaded.set_vocabulary(["cat", "sky"])
    expected = model.text_context.context(
        model.backbone, model.text_context.context.tokens(model.backbone, vocabulary.synonyms)
    )
    assert torch.allclose(loaded.classifier.embeddings, expected, atol=1e-5)
