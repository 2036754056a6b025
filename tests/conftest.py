import os
from pathlib import Path

import pytest

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
