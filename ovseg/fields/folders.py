"""One door to a field folder: which kind it holds (3D, 4D, lifted), read from its
field.json once, the class that loads it, and the readers of its tensor files (through
:mod:`ovseg.checkpoint`: a damaged file is one line naming it and its wrong keys)."""

from __future__ import annotations

import json
from pathlib import Path

REFIT = "the field folder is damaged or from another ovseg version: fit it again"


def field_class(folder: str | Path):
    """The class that loads ``folder``: :class:`~ovseg.fields.field.LanguageField`,
    :class:`~ovseg.fields.field4d.DynamicField` or :class:`~ovseg.fields.lift.LiftedField`,
    by its field.json's "format". A folder without a readable field.json, or of another
    format, gets LanguageField, whose ``read_meta`` says in one line what is wrong."""
    from ovseg.fields.field import LanguageField
    from ovseg.fields.field4d import FORMAT as DYNAMIC
    from ovseg.fields.field4d import DynamicField
    from ovseg.fields.lift import FORMAT as LIFTED
    from ovseg.fields.lift import LiftedField

    try:
        fmt = json.loads((Path(folder) / "field.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return LanguageField
    return {DYNAMIC: DynamicField, LIFTED: LiftedField}.get(fmt, LanguageField)


def open_field(folder: str | Path, predictor):
    """Load the field in ``folder`` with ``predictor`` (its CLIP must be the field's), whatever
    its kind. Raises FieldError (one line) for a missing, unfinished or foreign folder."""
    return field_class(folder).load(folder, predictor)


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
