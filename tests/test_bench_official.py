"""``ovseg bench --official DIR``: the side-by-side runner, against a stand-in harness that
answers like the official one (the real one needs detectron2, built outside the project)."""

import json
import stat

from PIL import Image

from conftest import run_main
from ovseg.apps import bench

FAKE_PYTHON = """#!/bin/bash
# Stands in for the harness's venv python running run_ref.py: logs its arguments, answers
# with the official [time] lines (the total grows with the short side).
echo "$@" >> "$(dirname "$0")/../../calls.log"
side=640
while [ $# -gt 0 ]; do
  [ "$1" = "--short-side" ] && side=$2
  shift
done
echo "[time] imports 2.9s  build 3.4s  load 0.0s"
echo "[time] image 64x48 -> resized 85x64, padded 96x64, K=2, threads=1"
echo "[time] backbone 2.00s | text_classifier 0.00s | pixel_decoder 1.50s | \\
transformer_decoder 1.00s | ensemble+postprocess 0.50s | total $((side / 16)).00s"
"""


def fake_harness(folder):
    (folder / "venv/bin").mkdir(parents=True)
    python = folder / "venv/bin/python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    (folder / "run_ref.py").write_text("# the real harness script\n")
    (folder / "data").mkdir()
    Image.new("RGB", (64, 48), (90, 140, 60)).save(folder / "data/scene640x480.jpg")
    (folder / "data/vocab8.tsv").write_text("thing\tdog,puppy\nstuff\tgrass\n")
    return folder


def test_side_by_side_alternates_and_prints_ratios(tmp_path, capsys):
    harness = fake_harness(tmp_path / "ref")
    out = tmp_path / "side.json"
    args = ["--official", harness, "--config", "fcclip_tiny_test", "--short-side", "64"]
    args += ["--precisions", "fp32", "--repeats", "1", "--rounds", "2", "--threads", "1"]
    args += ["--memory", "--memory-short-side", "80", "--json", out]
    code, stdout, _ = run_main(bench.main, args, capsys)
    assert code == 0
    report = json.loads(out.read_text())
    # Two rounds at short side 64, then the memory run at 80: each its own official process,
    # on the harness's own photo and vocabulary.
    calls = (harness / "calls.log").read_text().splitlines()
    assert len(calls) == 3 and "--short-side 64" in calls[0] and "--short-side 80" in calls[2]
    assert all(f"--image {harness / 'data/scene640x480.jpg'}" in call for call in calls)
    assert all("--threads 1" in call and "--repeats" in call for call in calls)
    assert [run["seconds"]["total"] for run in report["official"]] == [4.0, 4.0]
    assert report["memory"]["official"]["seconds"]["total"] == 5.0
    ovseg_runs = report["ovseg"]["fp32"]
    assert len(ovseg_runs) == 2 and all(run["seconds"]["total"] > 0 for run in ovseg_runs)
    assert report["memory"]["fp32"]["peak_rss_mib"] > 100  # a whole python + torch process
    # The table's ratio is ovseg's median total over the official's.
    total = sorted(run["seconds"]["total"] for run in ovseg_runs)
    ratio = (total[0] + total[1]) / 2 / 4.0
    row = next(line for line in stdout.splitlines() if line.startswith("| image forward"))
    assert row.startswith("| image forward | 4.00 |") and f"({ratio:.2f}x)" in row
    assert "peak RSS, one fresh process each at short side 80: official" in stdout


def test_side_by_side_without_a_harness_says_how_to_build_one(tmp_path, capsys):
    args = ["--official", tmp_path / "nothing", "--config", "fcclip_tiny_test"]
    code, _, err = run_main(bench.main, args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "venv/bin/python is missing" in err and "rebuild.sh" in err


def test_output_differences_measure_against_the_official_outputs():
    import numpy as np
    import pytest

    from ovseg.apps.bench_official import HarnessError, output_differences

    rng = np.random.default_rng(0)
    reference = {
        "final_cls_logits": rng.normal(size=(5, 3)),
        "pred_masks": rng.normal(size=(5, 4, 6)) * 10,
        "sem_seg": rng.random((2, 8, 12)),
        "segments_id": np.array([1, 2, 3]),
    }
    ours = {name: value.copy() for name, value in reference.items() if name != "segments_id"}
    ours["pred_masks"][0, 0, 0] += 0.5
    ours["sem_seg"][:, :2] = ours["sem_seg"][::-1, :2]  # two rows of pixels swap classes
    ours["segments"] = 2
    report = output_differences(reference, ours)
    assert report["final_cls_logits_max_abs"] == 0
    assert report["pred_masks_max_abs"] == pytest.approx(0.5)
    scale = np.abs(reference["pred_masks"]).max()
    assert report["pred_masks_relative"] == pytest.approx(0.5 / scale)
    flipped = (reference["sem_seg"][0, :2] != reference["sem_seg"][1, :2]).mean() * 2 / 8
    assert report["semantic_agreement"] == pytest.approx(1 - flipped)
    assert (report["segments_official"], report["segments_ovseg"]) == (3, 2)
    ours["sem_seg"] = ours["sem_seg"][:, :4]
    with pytest.raises(HarnessError, match="sem_seg: official shape"):
        output_differences(reference, ours)
