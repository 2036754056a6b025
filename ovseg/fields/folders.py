"""What a field folder must hold, for every kind of field: its field.json finished and made
with this CLIP (:class:`FieldError` otherwise), and the readers of its tensor files (through
:mod:`ovseg.checkpoint`: a damaged file is one line naming it and its wrong keys). Which kind
a folder holds is :mod:`ovseg.fields.kinds`' question (it imports the kinds; they import
this)."""

from __future__ import annotations

import json
from pathlib import Path

REFIT = "the field folder is damaged or from another ovseg version: fit it again"


class FieldError(ValueError):
    """A field folder is missing, unfinished, or made with another model (message says)."""


def model_identity(predictor) -> dict:
    """What a field's embeddings depend on: the model's name and its CLIP's fingerprint
    (``predictor``: an :class:`~ovseg.predictor.OVSegPredictor` or, for queries, a
    :class:`~ovseg.predictor.TextModel`)."""
    text = predictor.text_encoder.backbone
    return {
        "model": str(predictor.model_name),
        "clip_fingerprint": text.text_fingerprint(),
        "embed_dim": int(text.embed_dim),
    }


def segment_rule(predictor) -> dict:
    """What else a field's segments depend on: ``{"keep_novel": True}`` when the predictor's
    panoptic output keeps the masks of classes unseen in training (``inference.keep_novel``,
    ``--keep-novel``), else nothing, so that folders made before the option still resume."""
    inference = getattr(predictor, "inference", None)
    return {"keep_novel": True} if getattr(inference, "keep_novel", False) else {}


def same_segment_rule(meta: dict, predictor) -> bool:
    """Whether the field.json ``meta`` was made under ``predictor``'s :func:`segment_rule`."""
    return meta.get("keep_novel") == segment_rule(predictor).get("keep_novel")


def read_finished_meta(
    folder: str | Path,
    fmt: str | tuple[str, ...],
    what: str,
    *,
    result: str = "gaussians.safetensors",
    verb: str = "fit",
) -> dict:
    """field.json of a finished field folder of format ``fmt`` (or one of them); FieldError
    when the folder
    holds none, another kind (``what`` names the expected one) or an unfinished run (no
    ``result`` file; ``verb`` names the command that resumes it)."""
    folder = Path(folder)
    meta_path = folder / "field.json"
    if not meta_path.is_file():
        raise FieldError(
            f"{folder}: no field.json; fit a field there first (ovseg fields "
            "fit SCENE --out FOLDER)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") not in ((fmt,) if isinstance(fmt, str) else fmt):
        raise FieldError(f"{folder}: field.json is not an ovseg {what}")
    if not meta.get("complete") or not (folder / result).is_file():
        raise FieldError(
            f"{folder}: the {verb} did not finish; run the same 'ovseg fields "
            f"{verb}' again to resume it"
        )
    return meta


def check_same_clip(folder: Path, meta: dict, predictor) -> None:
    """FieldError when ``predictor``'s CLIP is not the one the field was fitted with."""
    identity = model_identity(predictor)
    if identity["clip_fingerprint"] != meta["clip_fingerprint"]:
        raise FieldError(
            f"{folder} was fitted with model '{meta['model']}' (CLIP "
            f"{meta['clip_fingerprint']}), not '{identity['model']}' (CLIP "
            f"{identity['clip_fingerprint']}); query it with the model it was made with"
        )


def read_field_tensors(path: str | Path, names, *, hint: str = REFIT) -> dict:
    """The tensors of a field's file ``path``, which must be exactly ``names``: a
    :class:`~ovseg.checkpoint.WeightsError` in one line naming the file and the missing or
    unexpected ones (or saying it is unreadable), ending with ``hint``."""
    from ovseg.checkpoint import check_tensor_names, read_state_dict

    tensors = read_state_dict(path, hint=hint)
    check_tensor_names(tensors, dict.fromkeys(names), source=str(path), hint=hint)
    return tensors


def load_field_module(module, path: str | Path, *, hint: str = REFIT):
    """``module`` with the weights of a field's file ``path`` (an autoencoder, a deformation
    or status network), in eval mode; :func:`ovseg.checkpoint.load_state`'s one-line
    WeightsError when they do not fit."""
    from ovseg.checkpoint import load_state, read_state_dict

    load_state(module, read_state_dict(path, hint=hint), source=str(path), hint=hint)
    return module.eval()
