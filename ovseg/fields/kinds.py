"""One door to a field folder: which kind it holds (3D, 4D, lifted), read from its
field.json once, and the class that loads it."""

from __future__ import annotations

import json
from pathlib import Path

from ovseg.fields.field import LanguageField
from ovseg.fields.field4d import FORMAT as DYNAMIC
from ovseg.fields.field4d import DynamicField
from ovseg.fields.lift import FORMAT as LIFTED
from ovseg.fields.lift import FORMAT_REFINED as LIFTED_REFINED
from ovseg.fields.lift import LiftedField


def field_class(folder: str | Path):
    """The class that loads ``folder``: :class:`~ovseg.fields.field.LanguageField`,
    :class:`~ovseg.fields.field4d.DynamicField` or :class:`~ovseg.fields.lift.LiftedField`,
    by its field.json's "format". A folder without a readable field.json, or of another
    format, gets LanguageField, whose ``read_meta`` says in one line what is wrong."""
    try:
        fmt = json.loads((Path(folder) / "field.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return LanguageField
    kinds = {DYNAMIC: DynamicField, LIFTED: LiftedField, LIFTED_REFINED: LiftedField}
    return kinds.get(fmt, LanguageField)


def open_field(folder: str | Path, predictor):
    """Load the field in ``folder`` with ``predictor`` (its CLIP must be the field's), whatever
    its kind. Raises FieldError (one line) for a missing, unfinished or foreign folder."""
    return field_class(folder).load(folder, predictor)
