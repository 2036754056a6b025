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
