"""The 3D-field report's arithmetic on hand-made records, and its quick run end to end
(slow)."""

import math

import pytest

from ovseg.synthetic.fields_report import markdown, summarise


def test_summarise_counts_localisation_iou_consistency_and_accuracy():
    records = {
        "field": {
            "loc": [("star", True), ("star", False), ("circle", True)],
            "iou": [("star", 0.5), ("circle", 1.0), ("grass", 0.0)],
            # object a (a star) is called star, star, circle; object b (a circle) circle
            "labels": [
                ("a", "star", "star"),
                ("a", "star", "star"),
                ("a", "star", "circle"),
                ("b", "circle", "circle"),
            ],
        }
    }
    seen = {"circle": True, "star": False, "grass": False}
    summary = summarise(records, seen)["field"]
    assert summary["novel"]["localisation"] == pytest.approx(50.0)
    assert summary["base"]["localisation"] == pytest.approx(100.0)
    assert summary["novel"]["mIoU"] == pytest.approx(25.0)  # star 0.5, grass 0.0
    assert summary["all"]["mIoU"] == pytest.approx(50.0)
    assert summary["novel"]["consistency"] == pytest.approx(200 / 3)
    assert summary["all"]["consistency"] == pytest.approx(75.0)
    assert summary["all"]["label_accuracy"] == pytest.approx(75.0)
    assert summary["all"]["pairs"] == 3
    empty = summarise({"2d dense": {"loc": [], "iou": [], "labels": []}}, seen)
    assert math.isnan(empty["2d dense"]["all"]["mIoU"])


@pytest.mark.slow
def test_the_quick_bench_runs_and_writes_its_report(tmp_path):
    from ovseg.apps.bench_fields import main

    assert main(["--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    assert (tmp_path / "figure.png").stat().st_size > 1000
    text = (tmp_path / "report.md").read_text()
    assert "| field | novel |" in text and "render of a 256x256 view" in text
    assert markdown  # the same table the command prints
