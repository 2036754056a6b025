import os
from pathlib import Path

import pytest

# Tests never reach the network and never touch the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = Path(__file__).resolve().parent / "data"
PARITY = DATA / "parity_tiny"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OVSEG_WEIGHTS", str(tmp_path / "weights"))


@pytest.fixture(scope="session")
def parity_predictor():
    """The official tiny random model loaded through the converter (shared, read-only)."""
    import tempfile

    from ovseg.predictor import OVSegPredictor

    cache = tempfile.mkdtemp(prefix="ovseg-text-")
    return OVSegPredictor.from_pretrained("fcclip_tiny_parity", device="cpu", text_cache_dir=cache)
