"""The one place that loads, saves and converts weights.

ovseg's own format is a safetensors file of the FCCLIP state dict (CLIP weights included or
not). Official FC-CLIP checkpoints (detectron2 ``.pth``, ``{"model": state_dict}``) are
converted key by key; nothing is ever unpickled beyond tensors (``weights_only=True``).

Every module's weights go in through :func:`load_state` (the FC-CLIP model's through
:func:`load_weights`, which adds the CLIP rules): a state that does not fit is one
:class:`WeightsError` line naming the file and the missing, unexpected and mis-shaped keys.
Torch files are read by :func:`read_torch_file` alone.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
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


def read_state_dict(
    path: str | Path,
    *,
    keep: Callable[[str], bool] | None = None,
    hint: str = "download or convert it again",
) -> dict[str, torch.Tensor]:
    """Read tensors from a .safetensors or a torch .pth/.pt file (tensors only); official
    checkpoints are converted. ``keep``: only the tensors whose (ovseg) name it accepts (a
    safetensors file reads no others from disk). Corrupt or truncated files raise
    :class:`WeightsError` ending with ``hint`` (what to do)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty: {hint}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        state = _read_torch(path, hint)
        if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path} holds no state dict of tensors")
    else:
        state = _read_safetensors(path, keep, hint)
    state = convert_official_state_dict(state) if is_official_state_dict(state) else state
    return state if keep is None else {k: v for k, v in state.items() if keep(k)}


def _read_safetensors(path: Path, keep, hint: str) -> dict[str, torch.Tensor]:
    """The file's tensors, or those ``keep`` accepts (all of an official layout's, which
    :func:`read_state_dict` renames before choosing)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            names = list(file.keys())
            chosen = names
            if keep is not None and not is_official_state_dict(dict.fromkeys(names)):
                chosen = [name for name in names if keep(name)]
            state = {name: file.get_tensor(name) for name in chosen}
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(
            f"{path} is not a readable weights file (corrupt or truncated? {error}): {hint}"
        ) from error
    if not names:
        raise WeightsError(f"{path} holds no state dict of tensors")
    return state


def read_torch_file(path: str | Path, *, hint: str = "download it again"):
    """What a torch file (``torch.save``) holds, read with ``weights_only=True`` (tensors and
    plain values, never other objects). A corrupt or truncated file, or one holding other
    objects, is one :class:`WeightsError` line ending with ``hint`` (what to do)."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"{path} is not a readable torch checkpoint (corrupt or truncated, or it holds "
            f"objects other than tensors: {message}): {hint}"
        ) from error


def _read_torch(path: Path, hint: str) -> dict[str, torch.Tensor]:
    checkpoint = read_torch_file(path, hint=hint)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return checkpoint


def check_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    optional_prefix: str | None = None,
    source: str = "weights",
    hint: str = "check that --config/--model matches the weights",
) -> None:
    """Raise :class:`WeightsError` listing missing, unexpected and mis-shaped keys, ending with
    ``hint`` (what to do). Keys under ``optional_prefix`` may be missing."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    check_tensor_names(
        state_dict, expected, optional_prefix=optional_prefix, source=source, hint=hint
    )


def check_tensor_names(
    state_dict: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...] | None],
    *,
    optional_prefix: str | None = None,
    source: str = "weights",
    hint: str = "check that --config/--model matches the weights",
) -> None:
    """:func:`check_state_dict` against ``expected`` {name: shape, or None for any shape}:
    one :class:`WeightsError` line naming ``source``, with the first five missing,
    unexpected and mis-shaped keys and how many there are of each, then ``hint``."""
    missing = [k for k in expected if k not in state_dict]
    if optional_prefix is not None:
        missing = [k for k in missing if not k.startswith(optional_prefix)]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs model {expected[k]}"
        for k in state_dict
        if expected.get(k) is not None and tuple(state_dict[k].shape) != expected[k]
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


def load_state(
    module: nn.Module,
    state: str | Path | dict[str, torch.Tensor],
    *,
    source: str | None = None,
    optional_prefix: str | None = None,
    hint: str = "check that --config/--model matches the weights",
) -> None:
    """The one way weights go into a module: ``state`` (or the file it names, read by
    :func:`read_state_dict`) is checked against ``module``'s keys and shapes, then loaded.
    A state that does not fit is one :class:`WeightsError` line naming ``source`` (default:
    the file) with the missing, unexpected and mis-shaped keys (:func:`check_tensor_names`)
    and ``hint``. Keys under ``optional_prefix`` may be missing: they keep the module's
    values."""
    if isinstance(state, dict):
        source = source or "weights"
    else:
        state, source = read_state_dict(state), source or str(state)
    check_state_dict(module, state, optional_prefix=optional_prefix, source=source, hint=hint)
    module.load_state_dict(state, strict=optional_prefix is None)


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
        raise WeightsError(_no_clip_message(source))
    load_state(model, state, source=source, optional_prefix=None if with_clip else CLIP_PREFIX)
    if hasattr(model, "backbone"):
        model.backbone.reset_fingerprint()


def _no_clip_message(source: str) -> str:
    return (
        f"{source} holds no CLIP weights, and this model's CLIP has no open_clip pretrained "
        "tag to load them from: use a weights file saved with its CLIP (ovseg train writes "
        "it whenever the CLIP did not come from a tag; ovseg convert without --no-clip)"
    )


TEXT_CONTEXT_PREFIX = "text_context.context."


def is_text_key(key: str) -> bool:
    """Whether an ovseg weights key belongs to the model's text half: the frozen CLIP's text
    tower (its keys outside ``visual.``) or a learned text context."""
    if key.startswith(CLIP_PREFIX):
        return not key.startswith(CLIP_PREFIX + "visual.")
    return key.startswith(TEXT_CONTEXT_PREFIX)


def load_text_weights(
    text: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    context: nn.Module | None = None,
    clip_loaded: bool = False,
    source: str = "weights",
) -> None:
    """Load the text half of an FC-CLIP state dict (its :func:`is_text_key` keys) into
    ``text`` (a :class:`~ovseg.modeling.backbone.CLIPText`) and ``context`` (the model's
    learned context, or None), strictly and under the keys the whole model has, as
    :func:`load_weights` loads the whole model (the same rule for a file without CLIP)."""
    layout = nn.Module()  # the two parts where FCCLIP keeps them
    layout.backbone = nn.Module()
    layout.backbone.clip = text.clip
    if context is not None:
        layout.text_context = nn.Module()
        layout.text_context.context = context
    state = {k: v for k, v in state.items() if is_text_key(k)}
    with_clip = has_clip(state)
    if not with_clip and not clip_loaded:
        raise WeightsError(_no_clip_message(source))
    load_state(layout, state, source=source, optional_prefix=None if with_clip else CLIP_PREFIX)
    text.reset_fingerprint()


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
