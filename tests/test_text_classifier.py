"""TextEncoder with a fake CLIP whose text embeddings are known per prompt (spec s.3)."""

import hashlib

import numpy as np
import pytest
import torch

from ovseg.modeling.text_classifier import TextEncoder, default_text_cache_dir
from ovseg.vocabulary import Vocabulary

DIM = 6
TEMPLATES = ["a photo of a {}.", "There is a {} in the scene", "a large {}"]


def prompt_vector(prompt):
    """A fixed, non-normalised vector per prompt; norms vary from 0.5 to ~50 so that
    normalising before the template mean matters."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    return rng.standard_normal(DIM) * rng.uniform(0.5, 50.0)


class FakeBackbone:
    """The four methods TextEncoder uses; counts encode_text calls and their batch sizes."""

    def __init__(self, fingerprint="fake-text-tower-v1"):
        self.fingerprint = fingerprint
        self.prompts = []
        self.batch_sizes = []
        self._parameter = torch.nn.Parameter(torch.zeros(1))

    @property
    def calls(self):
        return len(self.batch_sizes)

    def tokenize(self, texts):
        tokens = torch.tensor([[len(self.prompts) + i] for i in range(len(texts))])
        self.prompts.extend(texts)
        return tokens

    def encode_text(self, tokens):
        self.batch_sizes.append(tokens.shape[0])
        rows = [prompt_vector(self.prompts[int(t)]) for t in tokens[:, 0]]
        return torch.tensor(np.stack(rows), dtype=torch.float32)

    def text_fingerprint(self):
        return self.fingerprint

    def parameters(self):
        return iter([self._parameter])


def expected_rows(synonyms, templates):
    rows = []
    for synonym in synonyms:
        per_prompt = [prompt_vector(t.format(synonym)) for t in templates]
        per_prompt = [v / np.linalg.norm(v) for v in per_prompt]
        mean = np.mean(per_prompt, axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


VOCAB = Vocabulary(
    classes=(("cat", "kitty"), ("dog",), ("traffic cone", "pylon", "cone")),
    is_thing=(True, True, True),
)


def test_embeddings_hand_computed_class_major(tmp_path):
    backbone = FakeBackbone()
    classifier = TextEncoder(backbone, TEMPLATES, cache_dir=tmp_path)(VOCAB)
    assert classifier.num_synonyms == [2, 1, 3]
    assert classifier.num_classes == 3
    assert classifier.embeddings.shape == (6, DIM)
    expected = expected_rows(["cat", "kitty", "dog", "traffic cone", "pylon", "cone"], TEMPLATES)
    np.testing.assert_allclose(classifier.embeddings.numpy(), expected, rtol=1e-5, atol=1e-6)
    # every prompt encoded once, synonym-major, template-minor
    assert backbone.prompts == [t.format(s) for s in VOCAB.synonyms for t in TEMPLATES]


def test_mean_of_normalised_is_not_normalised_mean(tmp_path):
    """Guards the test itself: the fake's norms differ enough that the order matters."""
    raw = np.mean([prompt_vector(t.format("cat")) for t in TEMPLATES], axis=0)
    raw = raw / np.linalg.norm(raw)
    assert np.abs(raw - expected_rows(["cat"], TEMPLATES)[0]).max() > 1e-2


def test_batching_gives_same_values(tmp_path):
    vocab = Vocabulary(classes=(("a",), ("b",), ("c",), ("d",), ("e",)), is_thing=(True,) * 5)
    templates = ["{} one", "two {}"]  # 5 synonyms x 2 templates = 10 prompts
    small = FakeBackbone()
    batched = TextEncoder(small, templates, batch_size=3, use_disk_cache=False)(vocab)
    assert small.batch_sizes == [3, 3, 3, 1]
    large = FakeBackbone()
    whole = TextEncoder(large, templates, batch_size=128, use_disk_cache=False)(vocab)
    assert large.batch_sizes == [10]
    torch.testing.assert_close(batched.embeddings, whole.embeddings, rtol=0, atol=1e-7)
    np.testing.assert_allclose(
        batched.embeddings.numpy(), expected_rows(list("abcde"), templates), rtol=1e-5, atol=1e-6
    )


def test_disk_cache_hit_without_encoding(tmp_path):
    first = FakeBackbone()
    reference = TextEncoder(first, TEMPLATES, cache_dir=tmp_path)(VOCAB)
    assert first.calls == 1
    assert len(list(tmp_path.glob("*.safetensors"))) == 1

    second = FakeBackbone()
    cached = TextEncoder(second, TEMPLATES, cache_dir=tmp_path)(VOCAB)
    assert second.calls == 0
    assert torch.equal(cached.embeddings, reference.embeddings)
    assert cached.num_synonyms == reference.num_synonyms


def test_unwritable_cache_folder_is_said_once_and_skipped(tmp_path, capsys):
    """A cache folder that cannot be created or written (here: below a plain file, which even
    root cannot write into) used to raise OSError out of the first prediction."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    backbone = FakeBackbone()
    encoder = TextEncoder(backbone, TEMPLATES, cache_dir=blocker / "text")
    one = encoder(VOCAB)
    other = encoder(Vocabulary((("zebra",),), (True,)))
    assert backbone.calls == 2 and one.embeddings.shape[0] == len(VOCAB.synonyms)
    assert other.embeddings.shape[0] == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ovseg: cannot write the text cache") and "\n" not in err  # once
    assert "OVSEG_CACHE" in err


def test_memory_cache_hit(tmp_path):
    backbone = FakeBackbone()
    encoder = TextEncoder(backbone, TEMPLATES, use_disk_cache=False, cache_dir=tmp_path)
    one = encoder(VOCAB)
    two = encoder(VOCAB)
    assert backbone.calls == 1
    assert torch.equal(one.embeddings, two.embeddings)
    assert not any(tmp_path.iterdir())  # the disk cache is off: nothing written


@pytest.mark.parametrize("change", ["templates", "synonyms", "synonym order", "fingerprint"])
def test_cache_misses_when_inputs_change(tmp_path, change):
    TextEncoder(FakeBackbone(), TEMPLATES, cache_dir=tmp_path)(VOCAB)
    templates, vocab, backbone = TEMPLATES, VOCAB, FakeBackbone()
    if change == "templates":
        templates = TEMPLATES[:2]
    elif change == "synonyms":
        vocab = Vocabulary(
            classes=(("cat", "kitten"), ("dog",), ("traffic cone", "pylon", "cone")),
            is_thing=(True, True, True),
        )
    elif change == "synonym order":
        vocab = Vocabulary(
            classes=(("kitty", "cat"), ("dog",), ("traffic cone", "pylon", "cone")),
            is_thing=(True, True, True),
        )
    else:
        backbone = FakeBackbone(fingerprint="other-weights")
    classifier = TextEncoder(backbone, templates, cache_dir=tmp_path)(vocab)
    assert backbone.calls > 0
    expected = expected_rows(vocab.synonyms, templates)
    np.testing.assert_allclose(classifier.embeddings.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_same_synonyms_different_grouping_keeps_own_num_synonyms(tmp_path):
    """The cache holds per-synonym rows; the class grouping comes from the vocabulary."""
    TextEncoder(FakeBackbone(), TEMPLATES, cache_dir=tmp_path)(VOCAB)
    regrouped = Vocabulary(
        classes=(("cat",), ("kitty", "dog"), ("traffic cone",), ("pylon", "cone")),
        is_thing=(True,) * 4,
    )
    classifier = TextEncoder(FakeBackbone(), TEMPLATES, cache_dir=tmp_path)(regrouped)
    assert classifier.num_synonyms == [1, 2, 1, 2]
    assert classifier.synonym_index.tolist() == [[0, 7], [1, 2], [3, 7], [4, 5]]


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSEG_CACHE", str(tmp_path / "elsewhere"))
    assert default_text_cache_dir() == tmp_path / "elsewhere" / "text"
    backbone = FakeBackbone()
    TextEncoder(backbone, TEMPLATES)(VOCAB)
    assert len(list((tmp_path / "elsewhere" / "text").glob("*.safetensors"))) == 1
