import os
import socket
import time
from pathlib import Path

import pytest
import torch

# Tests never reach the network and never touch the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = Path(__file__).resolve().parent / "data"
PARITY = DATA / "parity_tiny"
PARITY_WEIGHTS = PARITY / "fcclip_tiny_official.pth"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, tmp_path_factory, monkeypatch):
    """Fresh caches per test; the weights directory (outside tmp_path, which tests inspect)
    holds the parity fixture's random model, so that ``--model fcclip_tiny_parity`` finds it
    as a user's downloaded weights."""
    monkeypatch.setenv("OVSEG_CACHE", str(tmp_path / "cache"))
    weights = tmp_path_factory.mktemp("weights")
    (weights / PARITY_WEIGHTS.name).symlink_to(PARITY_WEIGHTS)
    monkeypatch.setenv("OVSEG_WEIGHTS", str(weights))


@pytest.fixture(scope="session")
def parity_predictor():
    """The official tiny random model loaded through the converter (shared, read-only)."""
    import tempfile

    from ovseg.predictor import OVSegPredictor

    cache = tempfile.mkdtemp(prefix="ovseg-text-")
    return OVSegPredictor.from_pretrained(
        weights=PARITY_WEIGHTS, config="fcclip_tiny_parity", device="cpu", text_cache_dir=cache
    )


@pytest.fixture
def image(tmp_path):
    """A 48x80 random RGB PNG, tmp_path/photo.png (command-line tests)."""
    import numpy as np
    from PIL import Image

    array = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process, *, seconds: float = 120, log: Path | None = None) -> None:
    """Until a server started as ``process`` accepts connections on ``port``; fails with its
    log if it ends first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, log.read_text() if log else "the server ended"
            time.sleep(0.5)
    raise AssertionError(f"nothing listens on port {port} after {seconds} s")


def run_main(main, args, capsys) -> tuple[int, str, str]:
    """Call a command's ``main`` with ``args`` (made strings): (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def one_thread():
    """Bit-exact comparisons of two fits: with several threads, CPU autograd accumulates the
    rasterizer's gathered-Gaussian gradients in a scheduling-dependent order, and two 2-thread
    fits of 8 steps differ by up to ~2e-3 on 0.1% of the values (seen in CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Tests of about 10 s and more on 2 cores (`--durations`), and whole files whose module
# fixtures are that long: the README's `python -m pytest` skips them (marker "long"), CI runs
# them too (`python -m pytest -m "not slow"`, .ci/run).
LONG = (
    "test_synthetic_world.py::test_quick_world",
    "test_export_onnx.py::",
    "test_cli_fields4d.py::",
    "test_install.py::",
    "test_distributed_inference.py::",
    "test_prompt_head.py::test_a_whole_small_sam_trains_and_loads_back_as_a_teacher",
    "test_prompt_head.py::test_training_lowers_the_loss_and_resumes_exactly",
    "test_prompt_head.py::test_train_command_writes_a_model_that_answers_clicks",
    "test_fields_rasterizer.py::test_gradcheck_float64",
    "test_keep_novel.py::test_synthetic_tiny_finds_novel_segments_with_it",
    "test_fields_deform.py::test_a_dynamic_fit_follows_motion_that_a_static_fit_cannot",
    "test_fields_deform.py::test_a_spacetime_fit_shows_a_change_of_state",
    "test_precision.py::test_bench_reports_stages_per_precision",
    "test_precision.py::test_fast_paths_agree_with_fp32_on_the_trained_tiny_model",
    "test_text_ablation.py::test_an_ablation_row_runs_once_and_lands_in_the_table",
    "test_train.py::test_two_process_torchrun_equals_one_process",
    "test_cli_fields.py::test_an_interrupted_fit_resumes",
    "test_fields_splat.py::test_sh_bases_to_degree_3_are_orthonormal",
    "test_bench_official.py::test_side_by_side_alternates_and_prints_ratios",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        node = item.nodeid.split("/")[-1]
        if node.startswith(LONG):
            item.add_marker(pytest.mark.long)
