"""``ovseg bench-gpu`` on the CPU with the tiny test model: every asked row, the largest batch
found by doubling, torch.compile's first call timed, bad options refused in one line."""

import json

import pytest

from conftest import run_main
from ovseg.apps import bench_gpu


def test_rows_for_every_precision_side_and_batch(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    args = ["--config", "fcclip_tiny_test", "--device", "cpu", "--short-sides", "64,96"]
    args += ["--precisions", "fp32,int8", "--batch-sizes", "1,3,max", "--max-batch", "2"]
    args += ["--compile", "off", "--repeats", "1", "--no-agreement", "--json", out]
    code, stdout, _ = run_main(bench_gpu.main, args, capsys)
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    found = [(r["precision"], r["short_side"], r["batch"], bool(r.get("largest"))) for r in rows]
    expected = [
        (p, side, batch, largest)
        for p in ("fp32", "int8")
        for side in (64, 96)
        for batch, largest in ((1, False), (3, False), (2, True))
    ]
    assert found == expected
    for row in rows:
        assert row["images_per_s"] == pytest.approx(row["batch"] / row["seconds"])
        assert row["peak_mib"] > 0
    assert "images/s" in stdout and "0.37 s an image on a V100" in stdout


def test_compile_first_call_is_timed(tmp_path, capsys):
    pytest.importorskip("torch._inductor")
    out = tmp_path / "gpu.json"
    args = ["--config", "fcclip_tiny_test", "--device", "cpu", "--short-sides", "64"]
    args += ["--precisions", "fp32", "--batch-sizes", "1", "--compile", "on"]
    args += ["--repeats", "1", "--no-agreement", "--json", out]
    assert run_main(bench_gpu.main, args, capsys)[0] == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["compile"] == "on" and row["compile_s"] > 0


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--batch-sizes", "1,0", "--batch-sizes takes integers >= 1"),
        ("--compile", "maybe", "--compile takes off, on"),
        ("--short-sides", "a", "--short-sides takes integers"),
        ("--precisions", "fp64", "unknown precision 'fp64'"),
    ],
)
def test_bad_options_are_refused(flag, value, message, capsys):
    code, _, err = run_main(bench_gpu.main, [flag, value], capsys)
    assert code == 2 and err.strip().startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("gone.jpg", None, "not found"), ("bad.jpg", b"not a jpeg", "bad.jpg")],
)
def test_a_missing_or_corrupt_image_is_refused_before_any_work(
    tmp_path, capsys, name, content, message
):
    image = tmp_path / name
    if content is not None:
        image.write_bytes(content)
    out = tmp_path / "gpu.json"
    args = ["--config", "fcclip_tiny_test", "--device", "cpu", "--image", image, "--json", out]
    code, stdout, err = run_main(bench_gpu.main, args, capsys)
    assert code == 2 and message in err and stdout == "" and not out.exists()
    assert len(err.strip().splitlines()) == 1
