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
            str(synthetic.image_dir),
            "--panoptic-json",
            str(synthetic.panoptic_json),
            "--panoptic-dir",
            str(synthetic.panoptic_dir),
            "--output",
            str(tmp_path / "pt"),
            "--num-workers",
            "0",
            "--limit",
            "2",
            "--head",
            "pixel-text",
        ]
    )
    report = json.loads((tmp_path / "pt" / "results.json").read_text())
    assert code == 0 and set(report) == {"semantic", "images", "seconds", "precision"}
    assert report["precision"]["precision"] == "fp32"  # eval's default: the exact path
    assert "mIoU" in capsys.readouterr().out
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


def test_a_listed_segment_missing_from_the_png_is_a_false_negative(tmp_path):
    """panopticapi counts a ground-truth segment listed in segments_info but drawn nowhere as
    a false negative; the loader used to drop it, so a perfect prediction of the other segment
    scored PQ 100 instead of 66.7."""
    from PIL import Image

    from ovseg.data.label_io import id_to_rgb
    from ovseg.evaluation import PanopticEvaluator

    (tmp_path / "images").mkdir()
    (tmp_path / "png").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    drawn = np.zeros((8, 8), np.int32)
    drawn[2:6, 2:6] = 7  # segment 7 is drawn; segment 9 (same class) is listed only
    Image.fromarray(id_to_rgb(drawn)).save(tmp_path / "png" / "a.png")
    segments = [
        {"id": 7, "category_id": 1, "iscrowd": 0},
        {"id": 9, "category_id": 1, "iscrowd": 0},
    ]
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}],
        "categories": [{"id": 1, "name": "cat", "isthing": 1}],
    }
    (tmp_path / "pan.json").write_text(json.dumps(data))
    sample = PanopticDataset(tmp_path / "images", tmp_path / "pan.json", tmp_path / "png")[0]
    assert [s["id"] for s in sample["segments_info"]] == [7, 9]
    assert len(sample["masks"]) == 1  # nothing to learn from the missing one
    evaluator = PanopticEvaluator([{"id": 0, "name": "cat", "isthing": True}])
    evaluator.update(
        sample["panoptic"], sample["segments_info"], drawn, [{"id": 7, "category_id": 0}]
    )
    assert evaluator.compute()["All"]["pq"] == pytest.approx(200 / 3)


def test_task_agreement_counts_pixels_per_class(tmp_path, capsys):
    """ovseg agreement: semantic says cat on the left half and sky on the right; panoptic
    finds the cat on half of its pixels and no segment elsewhere."""
    from PIL import Image

    from ovseg.apps.agreement import agreement, format_table
    from ovseg.vocabulary import as_vocabulary

    class Stub:
        vocabulary = None

        def set_vocabulary(self, vocab):
            self.vocabulary = as_vocabulary(vocab)

        def predict(self, image, tasks, short_side=None):
            sem = torch.zeros(2, 4, 4)
            sem[0, :, :2], sem[1, :, 2:] = 1.0, 1.0
            ids = torch.zeros(4, 4, dtype=torch.int32)
            ids[:2, :2] = 5
            return {
                "sem_seg": sem,
                "panoptic_seg": ids,
                "segments_info": [{"id": 5, "category_id": 0}],
            }

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    report = agreement(Stub(), [path, path], ["cat", "sky"])
    assert report["pixels"] == 32 and report["agree"] == pytest.approx(8 / 32)
    cat, sky = report["per_class"]["cat"], report["per_class"]["sky"]
    assert (cat["agree"], cat["none"], cat["panoptic_agreeing"]) == (0.5, 0.5, 1.0)
    assert (sky["agree"], sky["none"]) == (0.0, 1.0)
    assert "cat" in format_table(report)
