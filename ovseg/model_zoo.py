"""Named models: config preset, where the weights come from, and where they are kept.

Weights live in ``$OVSEG_WEIGHTS`` (default ``~/.cache/ovseg/weights``). Official checkpoints
are downloaded atomically (temp file + rename), checked against their sha256 when known, and
converted once to ovseg's safetensors format.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ovseg.assets import ASSETS_DIR
from ovseg.fileio import atomic_write


@dataclass(frozen=True)
class ZooEntry:
    name: str
    config: str  # preset in configs/
    filename: str  # file name in the weights directory
    description: str
    url: str | None = None  # official release (None: shipped with the project)
    sha256: str | None = None  # of the downloaded file, when known
    shipped_path: str | None = None  # package data, relative to ovseg/assets/
    meaningful: bool = True  # False for random-weight test models


MODEL_ZOO = {
    "fcclip_convnext_large_coco": ZooEntry(
        name="fcclip_convnext_large_coco",
        config="fcclip_convnext_large_coco",
        filename="fcclip_cocopan.pth",
        description="FC-CLIP ConvNeXt-L trained on COCO panoptic (official release, "
        "COCO PQ 54.4, ADE20K PQ 26.8 zero-shot)",
        # The official FC-CLIP release (Google Drive, linked from the FC-CLIP README).
        url="https://drive.google.com/uc?export=download&id=1-91PIns86vyNaL3CzMmDD39zKGnPMtvj",
    ),
    "synthetic_tiny": ZooEntry(
        name="synthetic_tiny",
        config="synthetic_tiny",
        filename="synthetic_tiny.safetensors",
        description="small FC-CLIP trained on the synthetic shapes world "
        "(tools/synthetic_world.py): knows shapes and textures only (vocab synthetic_world)",
        shipped_path="synthetic_tiny/synthetic_tiny.safetensors",
    ),
    "fcclip_tiny_parity": ZooEntry(
        name="fcclip_tiny_parity",
        config="fcclip_tiny_parity",
        filename="fcclip_tiny_official.pth",
        description="tiny FC-CLIP with RANDOM weights (the parity fixture of the tests, "
        "tests/data/parity_tiny/): shows the pipeline runs; its predictions mean nothing",
        meaningful=False,
    ),
}
DEFAULT_MODEL = "fcclip_convnext_large_coco"
# Used, and said, when the default model's weights are missing: the first one shipped.
FALLBACK_MODELS = ("synthetic_tiny",)


def fallback_model() -> str:
    """The first shipped model whose weights are present (FileNotFoundError if none is)."""
    for name in FALLBACK_MODELS:
        if local_weights(name) is not None:
            return name
    raise FileNotFoundError(
        f"{missing_weights_message(DEFAULT_MODEL)}; the shipped fallback model is missing too: "
        "reinstall ovseg"
    )


def weights_dir() -> Path:
    return Path(os.environ.get("OVSEG_WEIGHTS") or Path.home() / ".cache" / "ovseg" / "weights")


def get_entry(name: str) -> ZooEntry:
    """The zoo entry of ``name``; '-' and '_' are the same ('synthetic-tiny')."""
    key = name.replace("-", "_")
    if key not in MODEL_ZOO:
        raise KeyError(f"unknown model '{name}': choose one of {', '.join(MODEL_ZOO)}")
    return MODEL_ZOO[key]


def local_weights(name: str) -> Path | None:
    """The weights file of a zoo model if it is on this machine, else None."""
    entry = get_entry(name)
    candidates = [weights_dir() / entry.filename]
    if entry.shipped_path:
        candidates.append(ASSETS_DIR / entry.shipped_path)
    return next((p for p in candidates if p.is_file()), None)


def missing_weights_message(name: str) -> str:
    entry = get_entry(name)
    where = weights_dir() / entry.filename
    source = f" from {entry.url}" if entry.url else ""
    return (
        f"no weights for model '{name}': download {entry.filename}{source} and put it at "
        f"{where} (or set OVSEG_WEIGHTS, or pass --weights FILE)"
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_weights(name: str, *, progress: bool = True) -> Path:
    """Download a zoo model's official weights into the weights directory (atomic)."""
    entry = get_entry(name)
    existing = local_weights(name)
    if existing is not None:
        return existing
    if entry.url is None:
        raise FileNotFoundError(missing_weights_message(name))
    target = weights_dir() / entry.filename

    def fetch(tmp: str) -> None:
        with urllib.request.urlopen(entry.url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            from tqdm import tqdm

            with tqdm(
                total=total or None,
                unit="B",
                unit_scale=True,
                disable=not progress,
                desc=entry.filename,
                file=sys.stderr,
            ) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        if entry.sha256 and sha256_of(Path(tmp)) != entry.sha256:
            raise ValueError(f"checksum mismatch for {entry.filename}: download it again")

    atomic_write(target, fetch)
    return target
