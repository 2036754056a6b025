"""Ctrl-C and late failures: one line and what to do, never a traceback. Ctrl-C in any command
(start-up included) says 'interrupted; ...' with the command that resumes the work where there
is one, exit 130; the web demo refuses a missing gradio and a taken port before the model
loads."""

import socket
import sys

import pytest
from test_layout import ROOT, SCRIPTS

from conftest import run_main
from ovseg.apps import main as ovseg_main


def ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "argv, said",
    [
        (
            ["train", "--output", "runs/my run"],
            "resume with: ovseg train --output 'runs/my run' --resume",
        ),
        (["train", "--output", "r", "--resume"], "resume with: ovseg train --output r --resume"),
        (
            ["train-prompt-head", "--output", "r", "--no-resume"],
            "resume with (from the last checkpoint): ovseg train-prompt-head --output r",
        ),
        (
            ["fields", "fit", "scene", "--out", "f"],
            "resume with the same command (it continues "
            "in its --out folder): ovseg fields fit scene --out f",
        ),
        (
            ["eval", "--dataset", "d"],
            "nothing is resumed: run the command again to start over (ovseg eval --dataset d)",
        ),
    ],
)
def test_ctrl_c_in_a_command_is_one_line_with_what_to_run(argv, said, monkeypatch, capsys):
    module = ovseg_main.COMMANDS[argv[0]][0]
    monkeypatch.setattr(f"ovseg.apps.{module}.main", ctrl_c)
    code, _, err = run_main(ovseg_main.main, argv, capsys)
    assert code == 130 and err == f"interrupted; {said}\n"


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    """While the command's module (torch ...) is still being imported."""
    monkeypatch.setattr(ovseg_main.importlib, "import_module", ctrl_c)
    code, _, err = run_main(ovseg_main.main, ["fields", "lift", "s", "--out", "o"], capsys)
    assert code == 130 and err.startswith("interrupted; resume with the same command")


@pytest.fixture
def no_model(monkeypatch):
    from ovseg import predictor

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(predictor, "load_predictor", refuse)


def test_app_without_gradio_says_how_to_install_it(no_model, monkeypatch, capsys):
    from ovseg.apps import web

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio fails
    code, _, err = run_main(web.main, ["--model", "synthetic_tiny"], capsys)
    assert code == 2 and err == "error: the web demo needs gradio: pip install 'ovseg[demo]'\n"


def test_app_on_a_taken_port_says_so_before_loading(no_model, capsys):
    from ovseg.apps import web

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_main(web.main, ["--model", "synthetic_tiny", "--port", port], capsys)
    assert code == 2 and err.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "give another --port" in err and err.count("\n") == 1


def test_a_4d_fit_without_the_fields4d_extra_is_refused_before_any_work(
    no_model, tmp_path, monkeypatch, capsys
):
    """The captions' sentence encoder used to be loaded after ~50 min of colour and language
    fitting; it is checked first."""
    from ovseg.apps import fields

    small = ["--steps", "3", "--train-cameras", "2", "--test-cameras", "1", "--size", "48x40"]
    assert fields.main(["world4d", str(tmp_path / "world"), *small]) == 0
    scene = tmp_path / "world" / "scene_000"
    assert (scene / "captions.json").is_file()
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # not installed
    args = ["fit", scene, "--out", tmp_path / "field", "--model", "synthetic_tiny"]
    code, _, err = run_main(fields.main, args, capsys)
    assert code == 2 and err.count("\n") == 1 and "pip install 'ovseg[fields4d]'" in err, err
    assert not (tmp_path / "field").exists()


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_ctrl_c_in_a_script_is_the_same_one_line(script, monkeypatch, capsys):
    """python demo/predict.py ... (or any tools/ script) ends as ``ovseg predict ...`` does."""
    import runpy

    command = SCRIPTS[script]
    monkeypatch.setattr(f"ovseg.apps.{ovseg_main.COMMANDS[command][0]}.main", ctrl_c)
    monkeypatch.setattr(sys, "argv", [script, "--output", "o"])
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    err = capsys.readouterr().err
    assert ended.value.code == 130 and err.startswith("interrupted; ") and err.count("\n") == 1
    assert f"ovseg {command} --output o" in err, err
