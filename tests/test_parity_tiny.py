"""ovseg must reproduce the official FC-CLIP code's outputs on its tiny random model
(tests/data/parity_tiny, see its README for the tolerance)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import PARITY
from ovseg.preprocess import load_image, normalize_and_pad, resize_image, shortest_edge_size
from ovseg.vocabulary import load_vocabulary, parse_vocabulary_text, seen_class_mask

TOL = 1e-4


def assert_close(name, actual, expected):
    actual = np.asarray(
        actual.detach().cpu() if torch.is_tensor(actual) else actual, dtype=np.float64
    )
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    error = np.abs(actual - expected)
    bound = TOL * np.maximum(1.0, np.abs(expected))
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else None
    assert (error <= bound).all(), (
        f"{name}: max abs error {error.max():.3g} at {worst} exceeds tolerance"
    )


@pytest.fixture(scope="module")
def vocab():
    return parse_vocabulary_text((PARITY / "vocab.tsv").read_text())


def test_vocabulary_and_seen_mask(vocab):
    expected = np.load(PARITY / "expected_a.npz")
    assert [", ".join(c) for c in vocab.classes] == list(expected["vocab_names"])
    assert list(vocab.is_thing) == list(expected["vocab_isthing"])
    assert vocab.num_synonyms == list(expected["num_templates"])
    seen = seen_class_mask(vocab, load_vocabulary("coco_panoptic"))
    assert seen == [bool(s) for s in expected["category_overlapping_mask"]]


@pytest.mark.parametrize("tag", ["a", "b"])
def test_every_intermediate_matches_official(parity_predictor, vocab, tag):
    predictor = parity_predictor
    model, cfg = predictor.model, predictor.cfg
    expected = np.load(PARITY / f"expected_{tag}.npz")
    image = load_image(PARITY / f"image_{tag}.png")
    assert list(image.shape[:2]) == list(expected["orig_hw"])
    resized_hw = shortest_edge_size(
        *image.shape[:2], int(expected["test_short_side"]), cfg.inference.max_size_test
    )
    assert list(resized_hw) == list(expected["resized_hw"])
    resized = resize_image(image, resized_hw)
    np.testing.assert_array_equal(resized, expected["resized_image"])
    pixels = normalize_and_pad([resized], cfg.inference.pixel_mean, cfg.inference.pixel_std)
    assert list(pixels.shape[-2:]) == list(expected["padded_hw"])
    assert_close("normalized_padded_image", pixels[0], expected["normalized_padded_image"])

    predictor.set_vocabulary(vocab)
    classifier = predictor.classifier
    void = F.normalize(model.void_embedding.weight, dim=-1)
    assert_close(
        "text_classifier", torch.cat([classifier.embeddings, void]), expected["text_classifier"]
    )
    with torch.no_grad():
        outputs = model.encode_image(pixels)
        logits = model.classify(outputs, classifier, torch.tensor(predictor.seen))
    for name in ("res2", "res3", "res4", "res5", "clip_vis_dense"):
        assert_close(f"feat_{name}", outputs["features"][name][0], expected[f"feat_{name}"])
    assert_close("mask_features", outputs["mask_features"][0], expected["mask_features"])
    for level in range(3):
        assert_close(
            f"multi_scale_{level}",
            outputs["multi_scale_features"][level][0],
            expected[f"multi_scale_{level}"],
        )
    assert_close("pred_logits", logits["in_vocab"][0], expected["pred_logits"])
    assert_close("pred_masks", outputs["pred_masks"][0], expected["pred_masks"])
    assert len(outputs["aux_outputs"]) == expected["aux_pred_logits"].shape[0]
    for i, aux in enumerate(outputs["aux_outputs"]):
        assert_close(
            f"aux_pred_logits[{i}]",
            model.in_vocab_logits(aux["pred_embeds"], classifier)[0],
            expected["aux_pred_logits"][i],
        )
        assert_close(f"aux_pred_masks[{i}]", aux["pred_masks"][0], expected["aux_pred_masks"][i])
    assert_close("out_vocab_embed", outputs["clip_embeds"][0], expected["out_vocab_embed"])
    assert_close("out_vocab_logits", logits["out_vocab"][0], expected["out_vocab_logits"])
    assert_close("final_cls_logits", logits["ensemble"][0], expected["final_cls_logits"])


@pytest.mark.parametrize("tag", ["a", "b"])
def test_final_outputs_match_official(parity_predictor, vocab, tag):
    expected = np.load(PARITY / f"expected_{tag}.npz")
    result = parity_predictor.predict(
        PARITY / f"image_{tag}.png", vocabulary=vocab, short_side=int(expected["test_short_side"])
    )
    assert_close("sem_seg", result["sem_seg"], expected["sem_seg"])
    np.testing.assert_array_equal(result["sem_seg"].argmax(0).numpy(), expected["sem_seg_argmax"])

    # Panoptic: the same segments (ids may be renumbered) with the same class and thing flag.
    panoptic = result["panoptic_seg"].numpy()
    official = expected["panoptic_seg"]
    official_segments = {s["id"]: s for s in json.loads(str(expected["segments_info_json"]))}
    ours = {s["id"]: s for s in result["segments_info"]}
    assert len(ours) == len(official_segments)
    assert ((panoptic == 0) == (official == 0)).all()
    for segment_id, segment in ours.items():
        official_ids = np.unique(official[panoptic == segment_id])
        assert len(official_ids) == 1, "a segment maps onto several official segments"
        twin = official_segments[int(official_ids[0])]
        assert (panoptic[official == official_ids[0]] == segment_id).all()
        assert (segment["category_id"], segment["isthing"]) == (
            twin["category_id"],
            twin["isthing"],
        )

    # Instances: equal as sets after sorting by score.
    instances = result["instances"]
    order = np.argsort(-expected["inst_scores"], kind="stable")
    assert_close("inst_scores", instances["scores"], expected["inst_scores"][order])
    np.testing.assert_array_equal(instances["labels"].numpy(), expected["inst_classes"][order])
    np.testing.assert_array_equal(instances["masks"].numpy(), expected["inst_masks"][order])


def test_inference_shortcut_changes_nothing(parity_predictor):
    """Skipping the earlier layers' class heads (inference) leaves the outputs bit-identical."""
    model = parity_predictor.model
    pixels = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model.encode_image(pixels)
        fast = model.encode_image(pixels, aux_classes=False)
    for key in ("pred_embeds", "pred_masks", "clip_embeds"):
        torch.testing.assert_close(fast[key], full[key], rtol=0, atol=0)
    assert all(aux["pred_embeds"] is None for aux in fast["aux_outputs"])


def test_inference_without_aux_outputs_matches_full(parity_predictor):
    """Attention masks computed at each level's size (no earlier full-size masks) give the
    same final outputs to float rounding, and no aux outputs."""
    model = parity_predictor.model
    pixels = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model.encode_image(pixels)
        fast = model.encode_image(pixels, aux_classes=False, aux_outputs=False)
    for key in ("pred_embeds", "pred_masks", "clip_embeds"):
        torch.testing.assert_close(fast[key], full[key], rtol=1e-5, atol=1e-5)
    assert fast["aux_outputs"] == []
    assert len(full["aux_outputs"]) == model.transformer_decoder.num_layers
