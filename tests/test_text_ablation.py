"""The text-context ablation tool: a row trains, is scored and is not run twice; bad rows are
refused in one line."""

import json

from conftest import run_main
from ovseg.apps.text_ablation import main
from ovseg.synthetic.text_ablation import ROWS, row_config


def test_rows_switch_on_their_part_only():
    from ovseg.config import load_config

    base = load_config("synthetic_tiny")
    assert not row_config(base, "baseline").text_context.enabled
    cdt = row_config(base, "cdt").text_context
    assert cdt.cdt and not cdt.learnable_context and not cdt.visual_context_layers
    every = row_config(base, "all").text_context
    assert every.cdt and every.learnable_context == 8 and every.visual_context_layers == 3
    assert set(ROWS) == {"baseline", "pixel_text", "visual_context", "cdt", "context", "all"}


def test_an_ablation_row_runs_once_and_lands_in_the_table(tmp_path, capsys):
    out = tmp_path / "ablation"
    args = ["--out", out, "--quick", "--rows", "cdt", "--iterations", 2, "--no-progress"]
    code, stdout, err = run_main(main, args, capsys)
    assert code == 0, err
    record = json.loads((out / "cdt_seed0" / "row.json").read_text())
    assert record["iterations"] == 2 and set(record["results"]) == {
        "in_vocab",
        "out_vocab",
        "ensemble",
        "ensemble_keep_novel",
    }
    table = (out / "ablation.md").read_text()
    assert "| cdt | 0 | 2 | ensemble |" in table and "score maps (training-free)" in table
    stamp = (out / "cdt_seed0" / "row.json").stat().st_mtime_ns
    code, _, err = run_main(main, args, capsys)  # done rows are not run again
    assert code == 0 and (out / "cdt_seed0" / "row.json").stat().st_mtime_ns == stamp
    code, _, err = run_main(main, ["--out", out, "--rows", "magic"], capsys)
    assert code == 2 and "unknown ablation row 'magic'" in err and err.count("\n") == 1
