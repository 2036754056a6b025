"""Captions of objects' states over time: the time-sensitive supervision of 4D language
fields (4D LangSplat captions each tracked object per frame with a multimodal LLM; ovseg
takes the captions from a file: the synthetic 4D world writes its own, a user writes one for a
real video).

The file (JSON, times in the unit of the scene's frame times)::

    {"objects": [
        {"id": 3, "name": "star",                       # id: the object's value in the
         "states": [                                    # scene's segments/FRAME.png maps
            {"start": 0.0, "end": 0.42, "caption": "a blue star"},
            {"start": 0.42, "end": 1.0, "caption": "a red star"}]}]}

A state holds for start <= t < end (the last one also at its end). One object's states may
leave gaps but must not overlap.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ovseg.fileio import write_text_atomic


class CaptionsError(ValueError):
    """A captions file is malformed or inconsistent with its scene (the message says how)."""


@dataclass(frozen=True)
class CaptionSpan:
    """One state of one object: ``caption`` holds for start <= t < end."""

    start: float
    end: float
    caption: str


def read_captions(path: str | Path) -> dict[int, list[CaptionSpan]]:
    """{object id: its states in time order}. Raises CaptionsError (missing file, not JSON,
    missing keys, empty captions, start >= end, overlapping states of one object)."""
    path = Path(path)
    if not path.is_file():
        raise CaptionsError(f"{path}: no such captions file")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CaptionsError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("objects"), list):
        raise CaptionsError(f"{path}: needs an 'objects' list (see ovseg.fields.captions)")
    out: dict[int, list[CaptionSpan]] = {}
    for number, item in enumerate(meta["objects"]):
        where = f"{path}: object {number}"
        if not isinstance(item, dict) or not isinstance(item.get("states"), list):
            raise CaptionsError(f"{where} needs an 'id' and a 'states' list")
        object_id = item.get("id")
        if isinstance(object_id, bool) or not isinstance(object_id, int):
            raise CaptionsError(
                f"{where}: 'id' must be an integer (its value in the segment "
                f"maps), got {object_id!r}"
            )
        if object_id in out:
            raise CaptionsError(f"{where}: object id {object_id} is listed twice")
        spans = [_span(state, f"{where} (id {object_id})") for state in item["states"]]
        out[object_id] = check_spans(spans, f"{path}: object {object_id}")
    return out


def _span(state, where: str) -> CaptionSpan:
    if not isinstance(state, dict) or not {"start", "end", "caption"} <= set(state):
        raise CaptionsError(f"{where}: each state needs 'start', 'end' and 'caption'")
    start, end, caption = state["start"], state["end"], state["caption"]
    for name, value in (("start", start), ("end", end)):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise CaptionsError(f"{where}: '{name}' must be a finite number, got {value!r}")
    if not isinstance(caption, str) or not caption.strip():
        raise CaptionsError(f"{where}: a state's caption is empty")
    if not start < end:
        raise CaptionsError(f"{where}: state '{caption}' starts at {start} but ends at {end}")
    return CaptionSpan(float(start), float(end), caption.strip())


def check_spans(spans: list[CaptionSpan], where: str) -> list[CaptionSpan]:
    """``spans`` in time order; CaptionsError when two of them overlap."""
    ordered = sorted(spans, key=lambda s: s.start)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.start < before.end:
            raise CaptionsError(
                f"{where}: states '{before.caption}' ({before.start:g}-{before.end:g}) and "
                f"'{after.caption}' ({after.start:g}-{after.end:g}) overlap; one object is in "
                "one state at a time"
            )
    return ordered


def check_objects(captions: dict[int, list[CaptionSpan]], known: set[int], where: str) -> None:
    """CaptionsError when the captions name an object id that no segment map has."""
    unknown = sorted(set(captions) - known)
    if unknown:
        raise CaptionsError(
            f"{where}: captions name object id(s) {', '.join(map(str, unknown))}, which no "
            f"segment map of the scene has (ids there: {', '.join(map(str, sorted(known)))})"
        )


def caption_at(spans: list[CaptionSpan], t: float) -> str | None:
    """The caption that holds at time ``t`` (the last state also at its end), or None."""
    for span in spans:
        if span.start <= t < span.end:
            return span.caption
    if spans and t == spans[-1].end:
        return spans[-1].caption
    return None


def write_captions(path: str | Path, spans: dict[int, list[dict]], *, names=None) -> None:
    """Write {id: [{start, end, caption}, ...]} (and optional {id: name}) as a captions
    file (checked as :func:`read_captions` checks it)."""
    objects = []
    for object_id in sorted(spans):
        checked = check_spans(
            [_span(s, f"object {object_id}") for s in spans[object_id]], f"object {object_id}"
        )
        item = {"id": int(object_id)}
        if names and object_id in names:
            item["name"] = names[object_id]
        item["states"] = [{"start": s.start, "end": s.end, "caption": s.caption} for s in checked]
        objects.append(item)
    write_text_atomic(path, json.dumps({"objects": objects}, indent=1))
