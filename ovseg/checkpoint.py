"""The one place that loads, saves and converts weights.

ovseg's own format is a safetensors file of the FCCLIP state dict (CLIP weights included or
not). Official FC-CLIP checkpoints (detectron2 ``.pth``, ``{"model": state_dict}``) are
converted key by key; nothing is ever unpickled beyond tensors (``weights_only=True``).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from ovseg.fileio import atomic_write

OVSEG_FORMAT = "ovseg-fcclip-v1"
CLIP_PREFIX = "backbone.clip."

# Official key prefix -> ovseg key prefix, first match wins. Every official key must match.
OFFICIAL_KEY_RULES = [
    ("backbone.clip_model.", "backbone.clip."),
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor._mask_pooling_proj.", "transformer_decoder.mask_pooling_proj."),
    ("sem_seg_head.predictor.", "transformer_decoder."),
    ("void_embedding.", "void_embedding."),
]
# Official keys with no ovseg counterpart: the training loss's class weights (recomputed).
OFFICIAL_DROPPED_KEYS = {"criterion.empty_weight"}


class WeightsError(ValueError):
    """A weights file that cannot be used; the message says why and what to do."""


def convert_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official FC-CLIP state dict -> ovseg state dict. Unknown keys are an error."""
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        if key in OFFICIAL_DROPPED_KEYS:
            continue
        for old, new in OFFICIAL_KEY_RULES:
            if key.startswith(old):
                converted[new + key[len(old) :]] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(
            f"{len(unknown)} keys of the official checkpoint have no ovseg counterpart "
            f"(first: {', '.join(unknown[:5])}); is this an FC-CLIP checkpoint?"
        )
    return converted


def is_official_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("sem_seg_head.") for k in state_dict)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a .safetensors or a torch .pth/.pt file (tensors only); official
    checkpoints are converted. Corrupt or truncated files raise :class:`WeightsError`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty: download it again")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        state = _read_torch(path)
    else:
        state = _read_safetensors(path)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    return convert_official_state_dict(state) if is_official_state_dict(state) else state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(
            f"{path} is not a readable weights file (corrupt or truncated? {error}): "
            "download or convert it again"
        ) from error


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"{path} is not a readable torch checkpoint (corrupt, truncated, or it holds "
            f"objects other than tensors: {message}): download it again"
        ) from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return checkpoint


def check_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    allow_missing_clip: bool = False,
    source: str = "weights",
    hint: str = "check that --config/--model matches the weights",
) -> None:
    """Raise :class:`WeightsError` listing missing, unexpected and mis-shaped keys, ending with
    ``hint`` (what to do)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    if allow_missing_clip:
        missing = [k for k in missing if not k.startswith(CLIP_PREFIX)]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state_dict
        if k in expected and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", mis_shaped),
        ):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {label}: {'; '.join(keys[:5])}{more}")
        raise WeightsError(
            f"{source} do not fit this model architecture ({' | '.join(parts)}): {hint}"
        )


def has_clip(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether an (ovseg) state dict holds the frozen CLIP's weights."""
    return any(k.startswith(CLIP_PREFIX) for k in state_dict)


def load_weights(
    model: nn.Module,
    path_or_state: str | Path | dict[str, torch.Tensor],
    *,
    clip_loaded: bool = False,
    source: str | None = None,
) -> None:
    """Load an ovseg or official weights file (or a state dict read by
    :func:`read_state_dict`) into ``model``, strictly.

    A file without CLIP weights is accepted only when ``clip_loaded`` (the CLIP was built with
    its open_clip pretrained weights). Raises :class:`WeightsError` listing what does not fit.
    """
    if isinstance(path_or_state, dict):
        state, source = path_or_state, source or "weights"
    else:
        state, source = read_state_dict(path_or_state), source or str(path_or_state)
    with_clip = has_clip(state)
    if not with_clip and not clip_loaded:
        raise WeightsError(
            f"{source} holds no CLIP weights, and this model's CLIP has no open_clip pretrained "
            "tag to load them from: use a weights file saved with its CLIP (ovseg train writes "
            "it whenever the CLIP did not come from a tag; ovseg convert without --no-clip)"
        )
    check_state_dict(model, state, allow_missing_clip=not with_clip, source=source)
    model.load_state_dict(state, strict=with_clip)
    if hasattr(model, "backbone"):
        model.backbone.reset_fingerprint()


def save_weights(
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    *,
    include_clip: bool = True,
    metadata: dict[str, str] | None = None,
) -> None:
    """Save a state dict as safetensors, atomically. ``include_clip=False`` drops the frozen
    CLIP weights (they come from open_clip at load time)."""
    from safetensors.torch import save_file

    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in state_dict.items()
        if include_clip or not k.startswith(CLIP_PREFIX)
    }
    meta = {"format": OVSEG_FORMAT, **(metadata or {})}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


_SHAPE = re.compile(r"^\d+(x\d+)*$")


def parse_shape(text: str) -> tuple[int, ...]:
    """'768x256' -> (768, 256); 'scalar' -> ()."""
    if text == "scalar":
        return ()
    if not _SHAPE.match(text):
        raise ValueError(f"bad shape '{text}'")
    return tuple(int(s) for s in text.split("x"))
