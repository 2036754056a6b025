"""Threads: the commands that run the model take --threads; the default is the cores this
process may use, shared among torchrun's processes (torch's own default ignores both, and on a
busy machine too many threads ran 10x slower)."""

import os

import pytest
import torch

from conftest import run_main
from ovseg.threads import default_threads, set_threads, usable_cores


def test_the_default_is_the_usable_cores_shared_among_torchruns_processes():
    assert usable_cores() == len(os.sched_getaffinity(0))
    assert default_threads({}, cores=8) == 8
    assert default_threads({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}, cores=8) == 4
    assert default_threads({"WORLD_SIZE": "3"}, cores=8) == 2
    assert default_threads({"LOCAL_WORLD_SIZE": "4"}, cores=2) == 1  # never 0
    assert default_threads({"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"}, cores=8) == 3
    assert default_threads({"OMP_NUM_THREADS": "", "WORLD_SIZE": "x"}, cores=8) == 8


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_set_threads_sets_torch_and_refuses_zero(restore_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(usable_cores()))
    assert set_threads(None) == 1 and torch.get_num_threads() == 1
    assert set_threads(2) == 2 and torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="--threads 0"):
        set_threads(0)


def test_predict_eval_train_and_app_take_threads(image, tmp_path, capsys, restore_threads):
    from ovseg.apps import eval as eval_app
    from ovseg.apps import predict, train, web

    for main, args in (
        (predict.main, [image, "--classes", "cat", "--output", tmp_path / "out"]),
        (eval_app.main, []),
        (train.main, ["--output", tmp_path / "run"]),
        (web.main, []),
    ):
        code, _, err = run_main(main, [*args, "--threads", "0"], capsys)
        assert code == 2 and err.strip() == "error: --threads 0: give 1 or more", err
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
    code, _, err = run_main(
        predict.main,
        [
            image,
            "--model",
            "synthetic_tiny",
            "--classes",
            "cat",
            "--output",
            tmp_path / "out",
            "--threads",
            "1",
        ],
        capsys,
    )
    assert code == 0 and torch.get_num_threads() == 1, err
