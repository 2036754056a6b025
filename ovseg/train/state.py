"""Training checkpoints: atomic saves, keep the last K, resume with everything restored.

A checkpoint holds the trainable weights (never the frozen CLIP), optimizer, scheduler and
grad-scaler states, the iteration, the configs and the torch RNG state. All randomness of the
data and the losses is derived from (seed, iteration, sample), so the iteration is the data
position. Files are written to a temp name and renamed, so a run killed at any moment leaves
its last complete checkpoint loadable.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ovseg.checkpoint import CLIP_PREFIX, WeightsError, read_torch_file
from ovseg.fileio import atomic_write

PATTERN = re.compile(r"^iter_(\d{8})\.pt$")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith(CLIP_PREFIX)}


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return Path(directory) / f"iter_{iteration:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if PATTERN.match(p.name))


def save_training_state(
    directory: str | Path, iteration: int, state: dict, *, keep_last: int = 3
) -> Path:
    path = checkpoint_path(Path(directory), iteration)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in list_checkpoints(directory)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_training_state(path: str | Path) -> dict:
    """Read a training checkpoint (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    state = read_torch_file(path, hint="resume from an earlier one or start again")
    missing = {"model", "optimizer", "iteration"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise WeightsError(
            f"{path} is not an ovseg training checkpoint (missing {', '.join(sorted(missing))})"
        )
    return state


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None
