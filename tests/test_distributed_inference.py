"""Evaluation and batch prediction under torchrun: two gloo processes give the report and the
files of one process (issue: inference across processes and machines)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovseg.evaluation.instance import InstanceEvaluator
from ovseg.synthetic.scenes import write_synthetic_panoptic

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN_TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
TORCHRUN_TWO += ["--nproc_per_node", "2", "-m", "ovseg"]
# One thread per process (2 processes on the 2 cores); this checkout, offline.
SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """7 val scenes of the synthetic world (odd, so the two shards differ in size)."""
    root = tmp_path_factory.mktemp("scenes")
    json_path = Path(write_synthetic_panoptic(root, 7, split="val", seed=3))
    split = json_path.parent
    return ["--images", split / "images", "--panoptic-json", json_path]


def run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def without_time(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "seconds"}


def assert_same_numbers(a, b, where="report"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_numbers(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-9, f"{where}: {a} != {b}"
    else:
        assert a == b, where


def test_two_process_evaluation_gives_the_one_process_report(scenes, tmp_path):
    panoptic_dir = Path(scenes[3]).parent / "panoptic"
    common = ["eval", "--model", "synthetic_tiny", *scenes, "--panoptic-dir", panoptic_dir]
    common += ["--num-workers", "0", "--save-predictions"]
    one = run([sys.executable, "-m", "ovseg", *common, "--output", tmp_path / "one"], tmp_path)
    two = run([*TORCHRUN_TWO, *common, "--output", tmp_path / "two"], tmp_path)
    reports = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two")]
    assert reports[0]["images"] == 7 and reports[0]["panoptic"]["All"]["n"] > 0
    assert_same_numbers(without_time(reports[0]), without_time(reports[1]))
    assert reports[0]["instance"]["segm"]["AP"] > 0  # AP was computed, not two empty sets
    # One report printed, by rank 0.
    assert two.stdout.count("== panoptic ==") == 1
    assert one.stdout.split("images in")[0] == two.stdout.split("images in")[0]
    predictions = [
        json.loads((tmp_path / d / "panoptic_predictions.json").read_text()) for d in ("one", "two")
    ]
    assert predictions[0] == predictions[1]
    for annotation in predictions[0]["annotations"]:
        pngs = [
            tmp_path / d / "panoptic_predictions" / annotation["file_name"] for d in ("one", "two")
        ]
        assert pngs[0].read_bytes() == pngs[1].read_bytes()


def test_two_process_prediction_writes_each_image_once_as_one_process(scenes, tmp_path):
    images = scenes[1]
    common = ["predict", images, "--vocab", "synthetic_world", "--model", "synthetic_tiny"]
    common += ["--precision", "fp32"]
    run([sys.executable, "-m", "ovseg", *common, "--output", tmp_path / "one"], tmp_path)
    done = run([*TORCHRUN_TWO, *common, "--output", tmp_path / "two"], tmp_path)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(names) == 3 * 7 and names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        files = [(tmp_path / d / name) for d in ("one", "two")]
        if name.endswith(".json"):
            records = [json.loads(f.read_text()) for f in files]
            assert records[0] == records[1], name
        else:
            assert files[0].read_bytes() == files[1].read_bytes(), name
    assert "4/4" in done.stderr and "7/7" not in done.stderr  # rank 0's share: 0, 2, 4, 6
    # Finished images are skipped on a second run, by every process.
    again = run([*TORCHRUN_TWO, *common, "--output", tmp_path / "two"], tmp_path)
    assert "skipping 7 input(s)" in again.stderr and "skipping" not in done.stderr


def test_instance_shards_merge_in_one_process_order():
    """Rank r adds images r, r + 2, ...; the merged evaluator numbers them as one process."""
    categories = [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]
    rng = np.random.default_rng(0)
    masks = [rng.random((3, 12, 16)) > 0.6 for _ in range(5)]
    one = InstanceEvaluator(categories)
    shards = [InstanceEvaluator(categories), InstanceEvaluator(categories)]
    for index, mask in enumerate(masks):
        for evaluator in (one, shards[index % 2]):
            evaluator.add_ground_truth(f"img{index}", mask[:2], [0, 1], [False, False])
            evaluator.add_prediction(f"img{index}", mask, [0.9, 0.5, 0.5], [0, 1, 1])
    merged = InstanceEvaluator(categories)
    merged.merge_shards([s.state() for s in shards])
    assert merged.images == one.images
    assert merged.gt_annotations == one.gt_annotations
    assert merged.predictions == one.predictions
    assert merged.compute() == one.compute()
    with pytest.raises(ValueError, match="two processes"):
        InstanceEvaluator(categories).merge_shards([one.state(), one.state()])
