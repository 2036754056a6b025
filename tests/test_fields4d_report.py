"""The 4D fields' benchmark (ovseg.synthetic.fields4d_report): its summary of known records,
and (slow) the quick benchmark end to end."""

import math

import pytest

from ovseg.synthetic.fields4d_report import _psnr, markdown, summarise


def _record(accuracy, tiou, inside):
    return {"frame_accuracy": accuracy, "temporal_iou": tiou, "iou_inside": inside}


def test_summarise_splits_base_and_novel_and_averages_the_time_sensitive_records():
    seen = {"circle": True, "star": False}
    records = {
        "agnostic": {
            "4d field": [("circle", 0.5), ("circle", 0.7), ("star", 0.2)],
            "3d field": [("circle", 0.1)],
            "2d masks": [],
        },
        "sensitive": {
            "4d field": [_record(1.0, 0.5, 0.4), _record(0.5, 0.0, 0.0)],
            "3d field": [],
            "2d masks": [_record(0.25, 0.25, 0.25)],
        },
        "psnr": {"4d field": [20.0, 22.0], "3d field": [18.0]},
    }
    summary = summarise(records, seen)
    row = summary["4d field"]
    assert row["mIoU_base"] == pytest.approx(60.0) and row["mIoU_novel"] == pytest.approx(20.0)
    assert row["mIoU_all"] == pytest.approx(100 * 1.4 / 3)
    assert row["frame_accuracy"] == pytest.approx(75.0) and row["temporal_iou"] == 25.0
    assert row["psnr"] == pytest.approx(21.0) and row["pairs"] == 3 and row["queries"] == 2
    assert math.isnan(summary["3d field"]["mIoU_novel"])
    assert math.isnan(summary["2d masks"]["psnr"]) and math.isnan(summary["2d masks"]["mIoU_all"])
    report = {
        "scenes": 1,
        "novel_classes": ["star"],
        "summary": summary,
        "fit4d_minutes": [2.0],
        "fit4d_stage_minutes": {"colour": 1.5, "status": 0.5},
        "fit3d_minutes": [1.0],
        "gaussians": [100],
        "render_frame_seconds": 0.25,
        "peak_rss_mib": 500.0,
        "threads": 1,
    }
    text = markdown(report)
    assert "| 4d field | 60.0 | 20.0 | 46.7 | 75.0 | 25.0 | 20.0 | 21.00 | 3 / 2 |" in text
    assert "| 2d masks | nan | nan | nan | 25.0 | 25.0 | 25.0 | - | 0 / 1 |" in text


def test_psnr_of_known_images():
    import numpy as np

    truth = np.zeros((4, 4, 3))
    assert _psnr(truth + 0.1, truth) == pytest.approx(20.0)
    assert _psnr(truth, truth) == pytest.approx(100.0)  # floored, not infinite


def _scene_record(settings, iou, seconds):
    return {
        "settings": settings,
        "records": {
            "agnostic": {"4d field": [["circle", iou]], "3d field": [], "2d masks": []},
            "sensitive": {"4d field": [_record(1.0, 1.0, iou)], "3d field": [], "2d masks": []},
            "psnr": {"4d field": [20.0], "3d field": []},
        },
        "seen": {"circle": True, "star": False},
        "fit4d_timings_s": {"colour": seconds, "status": 60.0},
        "fit3d_timings_s": {"colour": 30.0},
        "gaussians": 100,
        "render_frame_seconds": 0.5,
        "peak_rss_mib": seconds,
        "threads": 1,
    }


def test_the_bench_gathers_scenes_scored_apart_and_refits_a_scene_scored_otherwise(
    tmp_path, monkeypatch
):
    """Scenes scored by separate processes (--scene K) are read back, not refitted, when their
    settings match; a record made with other settings is recomputed."""
    import json

    import ovseg.synthetic.world4d as world4d
    from ovseg.fields.field import FieldConfig
    from ovseg.fields.field4d import Field4DConfig
    from ovseg.synthetic.fields4d_report import run

    def no_fitting(*args, **kwargs):
        raise AssertionError("refitted a scene that was already scored")

    monkeypatch.setattr(world4d, "write_scene4d", no_fitting)
    monkeypatch.setattr("ovseg.predictor.OVSegPredictor.from_pretrained", no_fitting)
    cfg, cfg3d = Field4DConfig(), FieldConfig()
    settings = {
        "seed": 0,
        "world": {"steps": 5},
        "fields4d": cfg.to_dict(),
        "fields3d": cfg3d.to_dict(),
    }
    (tmp_path / "scores").mkdir()
    for index, (iou, seconds) in enumerate([(0.2, 120.0), (0.6, 240.0)]):
        record = _scene_record(settings, iou, seconds)
        (tmp_path / "scores" / f"scene_{index:03d}.json").write_text(json.dumps(record))
    (tmp_path / "figure.png").write_bytes(b"png")
    report = run(tmp_path, scenes=2, cfg=cfg, cfg3d=cfg3d, world={"steps": 5})
    row = report["summary"]["4d field"]
    assert row["mIoU_base"] == pytest.approx(40.0) and row["pairs"] == 2
    assert row["iou_inside"] == pytest.approx(40.0) and row["queries"] == 2
    assert report["fit4d_minutes"] == pytest.approx([3.0, 5.0])
    assert report["fit4d_stage_minutes"]["colour"] == pytest.approx(3.0)
    assert report["peak_rss_mib"] == 240.0 and report["novel_classes"] == ["star"]
    assert "| 4d field | 40.0 |" in (tmp_path / "report.md").read_text()
    with pytest.raises(AssertionError, match="refitted"):  # another world: scene 0 is redone
        run(tmp_path, scenes=2, cfg=cfg, cfg3d=cfg3d, world={"steps": 6})


@pytest.mark.slow
def test_the_quick_4d_bench_runs_and_writes_its_report(tmp_path):
    from ovseg.apps.bench_fields4d import main

    assert main(["--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    assert (tmp_path / "figure.png").stat().st_size > 1000
    text = (tmp_path / "report.md").read_text()
    assert "| 4d field |" in text and "held-out PSNR" in text
