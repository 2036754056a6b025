"""An output folder that cannot take files is refused before any work, by every command that
writes one (one line, exit 2, nothing loaded or left behind); ``eval`` prints its scores before
it writes results.json, so that a failing write loses no hours of evaluation."""

import json
from pathlib import Path

import pytest

from conftest import run_main
from ovseg.synthetic.scenes import write_synthetic_panoptic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> list[str]:
    """A 2-image COCO-panoptic dataset as command-line arguments."""
    root = tmp_path_factory.mktemp("unwritable_data")
    json_path = Path(write_synthetic_panoptic(root, 2, size=(64, 80), seed=1, split="val"))
    folder = json_path.parent
    return [
        "--images",
        folder / "images",
        "--panoptic-json",
        json_path,
        "--panoptic-dir",
        folder / "panoptic",
    ]


@pytest.fixture
def blocked(tmp_path, monkeypatch) -> Path:
    """A path below a plain file (which even root cannot write into); loading a model fails
    the test (the check must come first)."""
    from ovseg import predictor

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the output folder was checked")

    monkeypatch.setattr(predictor, "load_predictor", no_model)
    monkeypatch.setattr(predictor.OVSegPredictor, "from_pretrained", no_model)
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    return blocker / "out"


def _refused(code: int, err: str, option: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write to output directory")
    assert lines[0].endswith(f"choose another {option}"), lines[0]


def test_eval_and_train_check_their_output_folder_first(dataset, blocked, capsys):
    from ovseg.apps import eval as eval_app
    from ovseg.apps import train, train_prompt_head

    code, _, err = run_main(
        eval_app.main, ["--model", "synthetic_tiny", *dataset, "--output", blocked], capsys
    )
    _refused(code, err, "--output")
    code, _, err = run_main(
        train.main, ["--config", "synthetic_tiny", *dataset, "--output", blocked], capsys
    )
    _refused(code, err, "--output")
    code, _, err = run_main(
        train_prompt_head.main, ["--model", "synthetic_tiny", "--output", blocked], capsys
    )
    _refused(code, err, "--output")


def test_export_checks_the_folder_it_builds_in_first(blocked, capsys):
    from ovseg.apps import export

    code, _, err = run_main(export.main, ["--model", "synthetic_tiny", "--out", blocked], capsys)
    _refused(code, err, "--out")


def test_fields_commands_check_their_output_folder_first(tmp_path, blocked, capsys):
    from ovseg.apps import fields

    for args, option in (
        (["world", blocked, "--scenes", "1"], "OUT"),
        (["world4d", blocked], "OUT"),
        (["fit", tmp_path, "--out", blocked, "--model", "synthetic_tiny"], "--out"),
        (["lift", tmp_path, "--splat", tmp_path, "--out", blocked], "--out"),
        (["query", tmp_path, "--text", "star", "--out", blocked], "--out"),
        (
            [
                "query",
                tmp_path,
                "--text",
                "star",
                "--out",
                tmp_path / "q",
                "--extract",
                blocked / "star.ply",
            ],
            "--extract",
        ),
    ):
        code, _, err = run_main(fields.main, args, capsys)
        _refused(code, err, option)
    assert not (tmp_path / "q").exists()  # made for the check, removed again: nothing left


def test_synthetic_experiments_check_their_output_folder_first(blocked, capsys):
    from ovseg.apps import synthetic_world, text_ablation

    for args in (["--quick"], ["--data-only", "2"]):
        code, _, err = run_main(synthetic_world.main, ["--out", blocked, *args], capsys)
        _refused(code, err, "--out")
    code, _, err = run_main(text_ablation.main, ["--out", blocked, "--quick"], capsys)
    _refused(code, err, "--out")


def test_ship_refuses_a_package_it_cannot_write_into(tmp_path, capsys, monkeypatch):
    from ovseg.apps import synthetic_world

    blocker = tmp_path / "package"
    blocker.write_text("not a folder")
    monkeypatch.setattr(synthetic_world, "PACKAGE", blocker)
    code, _, err = run_main(
        synthetic_world.main, ["--out", tmp_path / "run", "--quick", "--ship"], capsys
    )
    assert code == 2 and "--ship writes into the package" in err, err
    assert len(err.strip().splitlines()) == 1


def test_eval_prints_its_scores_before_a_failing_write(dataset, tmp_path, capsys, monkeypatch):
    from ovseg.apps import eval as eval_app
    from ovseg.evaluation import runner

    def disk_full(path, text):
        raise OSError(28, "No space left on device", str(path))

    args = [
        "--model",
        "fcclip_tiny_parity",
        *dataset,
        "--output",
        tmp_path / "out",
        "--num-workers",
        "0",
        "--limit",
        "1",
    ]
    with monkeypatch.context() as patch:
        patch.setattr(runner, "write_text_atomic", disk_full)
        code, out, err = run_main(eval_app.main, args, capsys)
    assert code == 1 and "PQ" in out, (out, err)
    assert "the scores are printed above" in err and "No space left" in err
    code, out, _ = run_main(eval_app.main, args, capsys)
    assert code == 0 and "PQ" in out
    assert json.loads((tmp_path / "out" / "results.json").read_text())["images"] == 1
