"""Captions of objects' states over time (ovseg.fields.captions): read, written, checked."""

import json

import pytest

from ovseg.fields.captions import (
    CaptionsError,
    CaptionSpan,
    caption_at,
    check_objects,
    read_captions,
    write_captions,
)


def _write(path, objects):
    path.write_text(json.dumps({"objects": objects}))
    return path


def test_round_trip_in_time_order(tmp_path):
    spans = {
        7: [
            {"start": 0.5, "end": 1.0, "caption": "a red star"},
            {"start": 0.0, "end": 0.5, "caption": "a blue star"},
        ]
    }
    write_captions(tmp_path / "c.json", spans, names={7: "star"})
    read = read_captions(tmp_path / "c.json")
    assert read == {7: [CaptionSpan(0.0, 0.5, "a blue star"), CaptionSpan(0.5, 1.0, "a red star")]}
    assert json.loads((tmp_path / "c.json").read_text())["objects"][0]["name"] == "star"


def test_caption_at_holds_from_start_to_before_end_and_at_the_last_end():
    spans = [CaptionSpan(0.0, 0.5, "a"), CaptionSpan(0.5, 0.8, "b"), CaptionSpan(0.9, 1.0, "c")]
    assert caption_at(spans, 0.0) == "a"
    assert caption_at(spans, 0.5) == "b"
    assert caption_at(spans, 0.85) is None  # a gap
    assert caption_at(spans, 1.0) == "c"
    assert caption_at(spans, 1.5) is None


OVERLAPPING = [{"start": 0, "end": 0.6, "caption": "a"}, {"start": 0.5, "end": 1, "caption": "b"}]


@pytest.mark.parametrize(
    "objects, message",
    [
        ([{"id": 1, "states": OVERLAPPING}], "overlap"),
        ([{"id": 1, "states": [{"start": 0.5, "end": 0.5, "caption": "a"}]}], "ends at"),
        ([{"id": 1, "states": [{"start": 0, "end": 1, "caption": " "}]}], "empty"),
        ([{"id": "x", "states": []}], "must be an integer"),
        ([{"id": 1, "states": [{"start": 0, "caption": "a"}]}], "needs 'start'"),
        ([{"id": 1, "states": []}, {"id": 1, "states": []}], "listed twice"),
        ([{"id": 1, "states": [{"start": "soon", "end": 1, "caption": "a"}]}], "finite number"),
    ],
)
def test_broken_captions_are_refused_in_one_line(tmp_path, objects, message):
    with pytest.raises(CaptionsError, match=message) as error:
        read_captions(_write(tmp_path / "c.json", objects))
    assert "\n" not in str(error.value)


def test_not_json_and_no_objects(tmp_path):
    (tmp_path / "a.json").write_text("{")
    with pytest.raises(CaptionsError, match="not valid JSON"):
        read_captions(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("[]")
    with pytest.raises(CaptionsError, match="'objects' list"):
        read_captions(tmp_path / "b.json")
    with pytest.raises(CaptionsError, match="no such captions file"):
        read_captions(tmp_path / "missing.json")


def test_unknown_objects_are_named():
    captions = {3: [CaptionSpan(0, 1, "a")], 9: [CaptionSpan(0, 1, "b")]}
    check_objects(captions, {0, 1, 3, 9}, "scene")
    with pytest.raises(CaptionsError, match=r"object id\(s\) 9, which no segment map"):
        check_objects(captions, {0, 1, 3}, "scene")
