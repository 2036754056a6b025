"""The synthetic world's report scores its three classifier modes with explicit ensemble
weights (``segment(..., alpha=, beta=)``), giving what setting the model's weights gave, and
leaves the model as it was."""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def val_set(tmp_path_factory):
    from ovseg.data import PanopticDataset
    from ovseg.synthetic.scenes import write_synthetic_panoptic

    root = tmp_path_factory.mktemp("val")
    json_path = write_synthetic_panoptic(root, 2, size=(64, 80), seed=3, split="val")
    return PanopticDataset(json_path.parent / "images", json_path, json_path.parent / "panoptic")


def test_each_mode_scores_as_the_model_set_to_its_weights_did(val_set, one_thread):
    from ovseg.evaluation import PanopticEvaluator, SemanticEvaluator
    from ovseg.predictor import OVSegPredictor
    from ovseg.synthetic.report import KEEP_NOVEL, MODES, SegmentTally, _evaluate_image

    predictor = OVSegPredictor.from_pretrained("synthetic_tiny", use_disk_text_cache=False)
    model = predictor.model
    model.alpha, model.beta = 0.3, 0.7  # the model's own weights: none of the modes'
    predictor.set_vocabulary(val_set.vocabulary)
    sample = val_set[0]
    tasks = ("panoptic", "semantic")
    # what the report did: set the model's weights per mode and predict
    before = {}
    for mode, (alpha, beta) in MODES.items():
        model.alpha, model.beta = alpha, beta
        before[mode] = predictor.predict(sample["image"], tasks=tasks, short_side=64)
    model.alpha, model.beta = 0.3, 0.7
    features = predictor.encode(sample["image"], short_side=64)
    for mode, (alpha, beta) in MODES.items():
        now = predictor.segment(features, tasks=tasks, alpha=alpha, beta=beta)
        for key in ("class_logits", "sem_seg", "panoptic_seg"):
            assert torch.equal(now[key], before[mode][key]), (mode, key)
        assert now["segments_info"] == before[mode]["segments_info"]
    default = predictor.segment(features, tasks=tasks)["class_logits"]
    explicit = predictor.segment(features, tasks=tasks, alpha=0.3, beta=0.7)["class_logits"]
    assert torch.equal(default, explicit)  # no weights given: the model's

    vocab = val_set.vocabulary
    categories = [
        {"id": i, "name": n, "isthing": t}
        for i, (n, t) in enumerate(zip(vocab.names, vocab.is_thing, strict=True))
    ]
    panoptic = {m: PanopticEvaluator(categories) for m in [*MODES, KEEP_NOVEL]}
    semantic = {m: SemanticEvaluator(len(vocab), class_names=vocab.names) for m in MODES}
    row = _evaluate_image(predictor, sample, 64, panoptic, semantic, SegmentTally(len(vocab)))
    assert (model.alpha, model.beta) == (0.3, 0.7)  # scored without touching the model
    for mode in MODES:
        expected = before[mode]["sem_seg"].argmax(0).numpy()
        assert np.array_equal(row[mode], expected), mode
