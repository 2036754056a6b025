"""tools/eval.py plumbing: a predictor that returns the ground truth scores 100 everywhere;
the real tiny model runs end to end through the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.data import PanopticDataset
from ovseg.evaluation.runner import evaluate
from ovseg.synthetic.scenes import write_synthetic_panoptic


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_eval")
    json_path = Path(write_synthetic_panoptic(root, 6, size=(64, 80), seed=1, split="val"))
    return PanopticDataset(json_path.parent / "images", json_path, json_path.parent / "panoptic")


class OraclePredictor:
    """Returns each image's ground truth in the predictor's result format."""

    def __init__(self, dataset):
        self.truth = {dataset[i]["image"].tobytes(): dataset[i] for i in range(len(dataset))}
        self.feature_cache_size = 4

    def set_vocabulary(self, vocab):
        self.seen = [i % 2 == 0 for i in range(len(vocab))]

    def predict(self, image, tasks):
        sample = self.truth[image.tobytes()]
        panoptic = torch.from_numpy(sample["panoptic"].astype(np.int32))
        segments = [s for s in sample["segments_info"] if not s["iscrowd"]]
        num_classes = len(self.seen)
        onehot = torch.zeros((num_classes,) + panoptic.shape)
        labels = torch.from_numpy(sample["sem_seg"].astype(np.int64))
        valid = labels != 255
        rows, cols = torch.nonzero(valid, as_tuple=True)
        onehot[labels[valid], rows, cols] = 1
        things = [s for s in segments if s["isthing"]]
        masks = (
            torch.stack([panoptic == s["id"] for s in things])
            if things
            else torch.zeros((0,) + panoptic.shape, dtype=torch.bool)
        )
        return {
            "image_size": panoptic.shape,
            "output_size": panoptic.shape,
            "panoptic_seg": panoptic,
            "segments_info": segments,
            "sem_seg": onehot,
            "instances": {
                "masks": masks,
                "scores": torch.ones(len(things)),
                "labels": torch.tensor([s["category_id"] for s in things]),
                "boxes": torch.zeros((len(things), 4)),
            },
        }


def test_ground_truth_scores_100(synthetic, tmp_path):
    report = evaluate(
        OraclePredictor(synthetic),
        synthetic,
        output_dir=tmp_path,
        save_predictions=True,
        num_workers=0,
        progress=False,
    )
    assert report["panoptic"]["All"]["pq"] == pytest.approx(100.0)
    assert report["semantic"]["mIoU"] == pytest.approx(100.0)
    assert report["instance"]["segm"]["AP"] == pytest.approx(100.0)
    assert report["images"] == 6
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["panoptic"]["All"]["pq"] == pytest.approx(100.0)
    predictions = json.loads((tmp_path / "panoptic_predictions.json").read_text())
    assert len(predictions["annotations"]) == 6


def test_eval_cli_runs_the_tiny_model(synthetic, tmp_path, capsys):
    from ovseg.apps.eval import main

    code = main(
        [
            "--model",
            "fcclip_tiny_parity",
            "--images",
            str(synthetic.image_dir),
            "--panoptic-json",
            str(synthetic.panoptic_json),
            "--panoptic-dir",
            str(synthetic.panoptic_dir),
            "--output",
            str(tmp_path),
            "--num-workers",
            "0",
            "--limit",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "PQ" in out
    assert json.loads((tmp_path / "results.json").read_text())["images"] == 3
    code = main(
        [
            "--model",
            "fcclip_tiny_parity",
            "--images",
            str(tmp_path / "nope"),
            "--panoptic-json",
            str(tmp_path / "nope.json"),
            "--panoptic-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and "error:" in capsys.readouterr().err
