"""The synthetic open-vocabulary world, --quick: the whole pipeline runs, its CLIP recognises
novel classes above chance and base classes are segmented well above chance."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_world(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tools"))
    from synthetic_world import main

    out = tmp_path_factory.mktemp("world")
    assert main(["--out", str(out), "--quick", "--no-progress"]) == 0
    return out


def test_quick_world_runs_and_reports(quick_world):
    report = json.loads((quick_world / "report.json").read_text())
    for name in ("report.md", "predictions.png", "synthetic_tiny.safetensors"):
        assert (quick_world / name).is_file()
    assert set(report["results"]) == {"in_vocab", "out_vocab", "ensemble"}
    assert report["weights_mib"] <= 20
    assert len(report["novel_classes"]) == 5


def test_quick_world_clip_recognises_novel_classes_above_chance(quick_world):
    report = json.loads((quick_world / "report.json").read_text())
    assert report["zero_shot"]["novel"] > 2 * report["zero_shot"]["chance"]
    assert report["zero_shot"]["base"] > 2 * report["zero_shot"]["chance"]
    # Base classes are segmented far better than chance by every classifier.
    for mode in ("in_vocab", "ensemble"):
        assert report["results"][mode]["mIoU_base"] > 3 * report["chance"]["mIoU_base"]
