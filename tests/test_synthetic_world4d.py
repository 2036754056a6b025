"""The synthetic 4D world (ovseg.synthetic.world4d): moving things that change state, its
frames, times, splits and captions."""

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.fields.captions import caption_at, read_captions
from ovseg.fields.posed_images import load_posed_images
from ovseg.synthetic import world4d
from ovseg.synthetic.render import SHAPES, draw_shape

SMALL = {
    "train_cameras": 2,
    "test_cameras": 1,
    "steps": 4,
    "held_out_every": 3,
    "width": 48,
    "height": 40,
}


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return world4d.write_scene4d(tmp_path_factory.mktemp("w4") / "scene", 0, 0, **SMALL)


def test_frames_load_with_times_cameras_and_splits(scene_dir):
    posed = load_posed_images(scene_dir)
    meta = json.loads((scene_dir / "scene.json").read_text())
    assert len(posed) == 3 * 4 and meta["times"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert meta["held_out_steps"] == [2]
    for index in posed.split("train"):
        # training frames: training cameras at training times
        assert posed.camera_ids[index] in ("c00", "c01")
        assert posed.times[index] != pytest.approx(meta["times"][2])
    test = posed.split("test")
    assert {posed.camera_ids[i] for i in test} == {"c00", "c01", "c02"}
    assert sum(posed.camera_ids[i] == "c02" for i in test) == 4  # the held-out camera, always
    assert posed.points is not None and len(posed.points) > 100


def test_same_seed_same_bytes(scene_dir, tmp_path):
    again = world4d.write_scene4d(tmp_path / "again", 0, 0, **SMALL)
    for name in ("scene.json", "captions.json", "images/c01_t003.png", "segments/c02_t001.png"):
        assert (again / name).read_bytes() == (scene_dir / name).read_bytes()


def test_every_scene_has_a_change_and_captions_cover_the_video():
    for index in range(6):
        scene = world4d.make_dynamic_scene(3, index)
        assert scene.things[0]["event"] in ("colour", "morph")
        for thing in scene.things:
            spans = world4d.captions(thing)
            assert spans[0]["start"] == 0.0 and spans[-1]["end"] == 1.0
            for before, after in zip(spans, spans[1:], strict=False):
                assert before["end"] == after["start"]


def test_a_colour_change_is_captioned_and_painted():
    thing = {
        "event": "colour",
        "category_from": "star",
        "category_to": "star",
        "colour_from": "blue",
        "colour_to": "red",
        "change_start": 0.4,
        "change_end": 0.4,
    }
    assert world4d.colour_at(thing, 0.39) == "blue" and world4d.colour_at(thing, 0.4) == "red"
    assert [s["caption"] for s in world4d.captions(thing)] == ["a blue star", "a red star"]


def test_a_morph_goes_from_one_shape_to_the_other():
    thing = {
        "event": "morph",
        "category_from": "ring",
        "category_to": "circle",
        "colour_from": "blue",
        "colour_to": "blue",
        "change_start": 0.2,
        "change_end": 0.6,
        "start": [0.0, 0.0],
        "end": [0.0, 0.0],
        "angle": 0.0,
        "radius": 0.3,
    }
    size = (256, 256)
    centre, radius = (128.0, 128.0), 0.3 * world4d.TEXELS_PER_UNIT
    ring = draw_shape(SHAPES["ring"], size, centre, radius, 0.0)
    circle = draw_shape(SHAPES["circle"], size, centre, radius, 0.0)
    assert np.array_equal(world4d.footprint(thing, 0.1, size), ring)
    assert np.array_equal(world4d.footprint(thing, 0.7, size), circle)
    middle = world4d.footprint(thing, 0.3, size)
    # the hole closes: a quarter into the morph, the area lies between the ring's and the circle's
    assert ring.sum() < middle.sum() < circle.sum()
    assert world4d.category_at(thing, 0.39) == "ring"
    assert world4d.category_at(thing, 0.4) == "circle"
    captions = [s["caption"] for s in world4d.captions(thing)]
    assert captions == ["a blue ring", "a blue ring turning into a circle", "a blue circle"]


def test_things_move_along_their_paths(scene_dir):
    meta = json.loads((scene_dir / "scene.json").read_text())
    moving = [
        o
        for o in meta["objects"]
        if o["isthing"] and o["start"] != o["end"] and o["event"] != "morph"
    ]
    assert moving
    scene = world4d.make_dynamic_scene(0, 0)
    for thing in moving:
        first = np.argwhere(scene.at(0.0).segment == thing["id"]).mean(0)
        last = np.argwhere(scene.at(1.0).segment == thing["id"]).mean(0)
        # texel rows grow towards -y, columns towards +x
        step = np.array([thing["start"][1] - thing["end"][1], thing["end"][0] - thing["start"][0]])
        assert np.allclose(last - first, step * world4d.TEXELS_PER_UNIT, atol=3.0)


def test_segment_maps_and_captions_name_the_same_objects(scene_dir):
    captions = read_captions(scene_dir / "captions.json")
    meta = json.loads((scene_dir / "scene.json").read_text())
    objects = {o["id"] for o in meta["objects"]}
    assert set(captions) == objects  # things and ground regions
    seen = set()
    for path in (scene_dir / "segments").glob("*.png"):
        seen |= set(np.unique(np.asarray(Image.open(path))).tolist())
    assert {o["id"] for o in meta["objects"] if o["isthing"]} <= seen
    for stuff in (o for o in meta["objects"] if not o["isthing"]):
        assert [s.caption for s in captions[stuff["id"]]] == [stuff["category"]]
    for spans in captions.values():
        assert caption_at(spans, 0.0) is not None and caption_at(spans, 1.0) is not None


def test_the_bench_figure_queries_a_changing_thing_by_its_first_class(scene_dir):
    from ovseg.fields.captions import read_captions
    from ovseg.synthetic.fields4d_report import figure_queries

    state, phrase = figure_queries(scene_dir)
    objects = {o["id"]: o for o in json.loads((scene_dir / "scene.json").read_text())["objects"]}
    captions = read_captions(scene_dir / "captions.json")
    changing = [k for k, spans in captions.items() if len(spans) > 1 and spans[1].caption == state]
    assert changing, state
    assert phrase == world4d.category_at(objects[changing[0]], 0.0)
    assert phrase in captions[changing[0]][0].caption  # "a black ring" names the ring
