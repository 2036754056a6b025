"""Geometric ensemble (spec s.7) and the text classifier's class logits (spec s.3)."""

import math

import numpy as np
import pytest
import torch

from ovseg.modeling.ensemble import geometric_ensemble
from ovseg.modeling.text_classifier import TextClassifier, classification_logits


def softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


def spec_ensemble(in_logits, out_logits, seen, alpha, beta):
    """Spec s.7 written out with numpy in float64."""
    p_in = softmax(in_logits[:-1])
    p_out = softmax(out_logits[:-1])
    z = []
    for c, is_seen in enumerate(seen):
        w = alpha if is_seen else beta
        z.append(math.log(p_in[c] ** (1 - w) * p_out[c] ** w))
    p_void = softmax(in_logits)[-1]
    probs = np.append(softmax(z) * (1 - p_void), p_void)
    return np.log(probs + 1e-8)


IN = [2.0, 0.5, -1.0, 0.3]  # K = 3 classes + void
OUT = [0.1, 1.5, 0.2, 5.0]
SEEN = [True, False, False]


def test_hand_computed_case():
    actual = geometric_ensemble(
        torch.tensor(IN, dtype=torch.float64),
        torch.tensor(OUT, dtype=torch.float64),
        torch.tensor(SEEN),
        alpha=0.4,
        beta=0.8,
    )
    expected = spec_ensemble(IN, OUT, SEEN, 0.4, 0.8)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_hand_computed_numbers():
    """The same case with the intermediate numbers spelled out (independent of spec_ensemble)."""
    e_in = [math.exp(v) for v in IN[:3]]
    p_in = [v / sum(e_in) for v in e_in]
    e_out = [math.exp(v) for v in OUT[:3]]
    p_out = [v / sum(e_out) for v in e_out]
    z0 = 0.6 * math.log(p_in[0]) + 0.4 * math.log(p_out[0])  # seen: alpha 0.4
    z1 = 0.2 * math.log(p_in[1]) + 0.8 * math.log(p_out[1])  # unseen: beta 0.8
    z2 = 0.2 * math.log(p_in[2]) + 0.8 * math.log(p_out[2])
    total = math.exp(z0) + math.exp(z1) + math.exp(z2)
    p_void = math.exp(0.3) / sum(math.exp(v) for v in IN)
    expected = [math.exp(z) / total * (1 - p_void) for z in (z0, z1, z2)] + [p_void]
    actual = (
        geometric_ensemble(
            torch.tensor(IN, dtype=torch.float64),
            torch.tensor(OUT, dtype=torch.float64),
            torch.tensor(SEEN),
        ).exp()
        - 1e-8
    )  # defaults are 0.4 / 0.8
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-9, atol=1e-12)
    # the final distribution sums to one (up to the 1e-8 per entry)
    assert abs(sum(expected) - 1.0) < 1e-12


def test_batched_leading_dims_and_seen_per_class():
    torch.manual_seed(0)
    in_logits = torch.randn(2, 5, 4, dtype=torch.float64) * 3
    out_logits = torch.randn(2, 5, 4, dtype=torch.float64) * 3
    seen = [False, True, False]
    actual = geometric_ensemble(in_logits, out_logits, torch.tensor(seen), alpha=0.3, beta=0.7)
    for b in range(2):
        for q in range(5):
            expected = spec_ensemble(
                in_logits[b, q].numpy(), out_logits[b, q].numpy(), seen, 0.3, 0.7
            )
            np.testing.assert_allclose(actual[b, q].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_zero_exponents_reduce_to_in_vocab_softmax():
    """alpha = beta = 0 ignores the out-of-vocab branch: P = softmax(in-vocab over K+1)."""
    in_logits = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    out_logits = torch.tensor([[9.0, -9.0, 0.0, 0.0]], dtype=torch.float64)
    actual = geometric_ensemble(
        in_logits, out_logits, torch.tensor([True, False, True]), alpha=0.0, beta=0.0
    )
    expected = np.log(softmax(in_logits[0].numpy()) + 1e-8)
    np.testing.assert_allclose(actual[0].numpy(), expected, rtol=1e-10)


def test_void_probability_only_from_in_vocab():
    in_logits = torch.tensor(IN, dtype=torch.float64)
    seen = torch.tensor(SEEN)
    reference = geometric_ensemble(in_logits, torch.tensor(OUT, dtype=torch.float64), seen)
    for void_logit in (-50.0, 0.0, 40.0):
        out_logits = torch.tensor(OUT[:3] + [void_logit], dtype=torch.float64)
        assert torch.equal(geometric_ensemble(in_logits, out_logits, seen), reference)
    # ... while the in-vocab void logit does move the void probability
    changed = geometric_ensemble(
        torch.tensor(IN[:3] + [3.0], dtype=torch.float64),
        torch.tensor(OUT, dtype=torch.float64),
        seen,
    )
    assert changed[-1] > reference[-1] + 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logit_gap_gives_no_nan(dtype):
    """A gap of 250 underflows a probability to exactly 0 in float32 (and 800 in float64)."""
    gap = 250.0 if dtype == torch.float32 else 800.0
    in_logits = torch.tensor([[0.0, -gap, -gap, -gap], [-gap, 0.0, -gap, 0.0]], dtype=dtype)
    out_logits = torch.tensor([[0.0, -gap, 0.0, 0.0], [-gap, 0.0, -gap, gap]], dtype=dtype)
    actual = geometric_ensemble(in_logits, out_logits, torch.tensor([True, False, False]))
    assert not torch.isnan(actual).any()
    probs = actual.exp()
    # row 0: both branches put all mass on class 0, void has ~0
    assert probs[0, 0] > 0.99
    # row 1: void and class 1 split the in-vocab softmax evenly; class 1 gets the rest
    assert abs(probs[1, 3].item() - 0.5) < 1e-6 and abs(probs[1, 1].item() - 0.5) < 1e-6


def test_extreme_gap_with_disagreeing_classifiers_gives_no_nan():
    gap = 250.0
    in_logits = torch.tensor([0.0, -gap, -gap, -gap])  # in-vocab: certainly class 0
    out_logits = torch.tensor([-gap, 0.0, -gap, 0.0])  # out-of-vocab: certainly class 1
    actual = geometric_ensemble(in_logits, out_logits, torch.tensor([True, True, True]))
    assert not torch.isnan(actual).any()
    # exact: z = [0.4 * -gap, 0.6 * -gap, -gap] -> class 0 wins by 0.2 * gap = 50
    assert actual.exp()[0] > 0.99


# ----------------------------------------------------------------------------------------------
# classification_logits


def test_classification_logits_hand_computed():
    # Synonym rows (class-major): class 0 = {s0, s1}, class 1 = {s2}, class 2 = {s3, s4, s5}.
    s = torch.eye(6, dtype=torch.float64)[:, :4].clone()
    s[4] = torch.tensor([0.0, 0.0, 0.6, -0.8], dtype=torch.float64)
    s[5] = torch.tensor([0.0, 0.0, -0.6, -0.8], dtype=torch.float64)
    s[3] = torch.tensor([0.0, 0.0, 0.0, -1.0], dtype=torch.float64)
    s[2] = torch.tensor([0.0, 0.0, -1.0, 0.0], dtype=torch.float64)
    classifier = TextClassifier(s, [2, 1, 3])
    # query x = (3, 4, 12, 0) / 13 after normalisation
    x = torch.tensor([[[3.0, 4.0, 12.0, 0.0]]], dtype=torch.float64)
    void = torch.tensor([[2.0, 0.0, -2.0, 0.0]], dtype=torch.float64)  # -> (1, 0, -1, 0) / sqrt 2
    logit_scale = torch.tensor(10.0, dtype=torch.float64)  # exp(10) > 100 -> clamped to 100
    logits = classification_logits(x, classifier, void, logit_scale)
    assert logits.shape == (1, 1, 4)
    expected = [
        100 * max(3 / 13, 4 / 13),  # class 0: the larger of its two cosines (second synonym)
        100 * (-12 / 13),  # class 1: single negative cosine, must not be lifted by padding
        100 * max(0.0, 0.6 * 12 / 13, -0.6 * 12 / 13),  # class 2: middle synonym
        100 * (3 - 12) / (13 * math.sqrt(2)),  # void, last
    ]
    np.testing.assert_allclose(logits[0, 0].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_classification_logits_scale_not_clamped_below_100():
    classifier = TextClassifier(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), [1, 1])
    x = torch.tensor([[[1.0, 1.0]]], dtype=torch.float64)
    void = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    logits = classification_logits(
        x, classifier, void, torch.tensor(math.log(20.0), dtype=torch.float64)
    )
    c = 1 / math.sqrt(2)
    np.testing.assert_allclose(logits[0, 0].numpy(), [20 * c, 20 * c, -20 * c], rtol=1e-12)


def test_classification_logits_random_against_loops():
    generator = torch.Generator().manual_seed(0)
    num_synonyms = [1, 3, 2, 1]
    rows = torch.randn(sum(num_synonyms), 5, generator=generator, dtype=torch.float64)
    rows = rows / rows.norm(dim=-1, keepdim=True)
    classifier = TextClassifier(rows, num_synonyms)
    x = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64) * 7
    void = torch.randn(1, 5, generator=generator, dtype=torch.float64) * 3
    logits = classification_logits(x, classifier, void, torch.tensor(math.log(50.0)))
    assert logits.shape == (2, 3, len(num_synonyms) + 1)
    void_unit = void[0] / void[0].norm()
    for b in range(2):
        for q in range(3):
            unit = x[b, q] / x[b, q].norm()
            start = 0
            for k, count in enumerate(num_synonyms):
                cosines = [float(unit @ rows[start + i]) for i in range(count)]
                assert logits[b, q, k].item() == pytest.approx(50 * max(cosines), rel=1e-6)
                start += count
            assert logits[b, q, -1].item() == pytest.approx(50 * float(unit @ void_unit), rel=1e-6)


def test_text_classifier_rejects_mismatched_synonym_counts():
    with pytest.raises(ValueError):
        TextClassifier(torch.zeros(3, 4), [1, 1])
