"""The synthetic open-vocabulary world: real COCO-panoptic files, deterministic, captioned."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from ovseg.data import PanopticDataset
from ovseg.synthetic.render import ACCENTS, OUTLINE_SHADE, PATTERNS, surface_pattern
from ovseg.synthetic.scenes import (
    CATEGORIES,
    COLOURS,
    base_novel_split,
    make_caption,
    plural,
    write_synthetic_panoptic,
)
from ovseg.vocabulary import parse_vocabulary_text

SIZE = (48, 64)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    json_path = write_synthetic_panoptic(root, 12, size=SIZE, seed=3, split="val", max_things=6)
    return root, json_path


def _decode_png(path):
    """Independent of ovseg: id = R + 256 G + 256^2 B."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def test_categories_have_enough_distinct_things_and_stuff():
    things = [c for c in CATEGORIES if c.isthing]
    stuff = [c for c in CATEGORIES if not c.isthing]
    assert len(things) >= 12 and len(stuff) >= 4
    assert len({c.name for c in CATEGORIES}) == len(CATEGORIES)
    assert len({c.id for c in CATEGORIES}) == len(CATEGORIES)


def test_files_and_json_agree_pixel_for_pixel(world):
    root, json_path = world
    assert json_path == root / "val" / "panoptic.json"
    data = json.loads(json_path.read_text())
    category_ids = {c["id"] for c in data["categories"]}
    seen_ids = set()
    for image_entry, annotation in zip(data["images"], data["annotations"], strict=True):
        assert annotation["image_id"] == image_entry["id"]
        image = np.asarray(Image.open(root / "val" / "images" / image_entry["file_name"]))
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
        assert (image_entry["height"], image_entry["width"]) == SIZE
        panoptic = _decode_png(root / "val" / "panoptic" / annotation["file_name"])
        described = {s["id"]: s for s in annotation["segments_info"]}
        assert set(np.unique(panoptic).tolist()) <= set(described)  # no void, no stray id
        for segment_id, segment in described.items():
            mask = panoptic == segment_id
            ys, xs = np.nonzero(mask)
            assert segment["area"] == mask.sum() > 0
            assert segment["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            assert segment["iscrowd"] == 0 and segment["category_id"] in category_ids
            seen_ids.add(segment_id)
    assert max(seen_ids) > 65535  # ids use the blue channel too, so channel order matters


def test_loads_through_panoptic_dataset(world):
    root, json_path = world
    dataset = PanopticDataset(root / "val" / "images", json_path, root / "val" / "panoptic")
    assert len(dataset) == 12
    by_id = sorted(CATEGORIES, key=lambda c: c.id)
    assert dataset.vocabulary.names == [c.name for c in by_id]
    assert list(dataset.vocabulary.is_thing) == [c.isthing for c in by_id]
    vocab_file = parse_vocabulary_text((root / "vocab.txt").read_text())
    assert vocab_file.classes == dataset.vocabulary.classes
    assert vocab_file.is_thing == dataset.vocabulary.is_thing
    num_things = 0
    for sample in dataset:
        assert sample["masks"].dtype == bool and sample["labels"].dtype == np.int64
        assert sample["masks"].sum(0).max() <= 1  # segments never overlap
        for mask, label, info in zip(
            sample["masks"], sample["labels"], sample["segments_info"], strict=True
        ):
            assert np.array_equal(mask, sample["panoptic"] == info["id"])
            assert label == info["category_id"] and info["isthing"] == by_id[label].isthing
            assert (sample["sem_seg"][mask] == label).all()
        num_things += sum(info["isthing"] for info in sample["segments_info"])
    assert num_things > 0


def test_same_seed_same_bytes_and_other_seed_other_images(tmp_path):
    paths = [
        write_synthetic_panoptic(tmp_path / name, 3, size=SIZE, seed=seed)
        for name, seed in (("a", 5), ("b", 5), ("c", 6))
    ]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 3 + 3 + 2  # images, PNGs, JSON, vocab.txt
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    for index in range(3):
        name = f"train/images/train_{index:05d}.png"
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert paths[0].read_text() != paths[2].read_text()
    images = [p.read_bytes() for p in sorted((tmp_path / "a" / "train" / "images").iterdir())]
    assert len(set(images)) == 3  # the images of one dataset differ from each other


def test_image_does_not_depend_on_dataset_length(tmp_path):
    write_synthetic_panoptic(tmp_path / "two", 2, size=SIZE, seed=1)
    write_synthetic_panoptic(tmp_path / "four", 4, size=SIZE, seed=1)
    for sub in ("images", "panoptic"):
        for name in ("train_00000.png", "train_00001.png"):
            two = (tmp_path / "two" / "train" / sub / name).read_bytes()
            assert two == (tmp_path / "four" / "train" / sub / name).read_bytes()


def test_captions_name_exactly_the_classes_present(world, tmp_path):
    _, json_path = world
    # Small crowded scenes, where things may hide a whole stuff region.
    crowded = write_synthetic_panoptic(tmp_path, 12, size=(20, 20), seed=0, max_things=30)
    data = json.loads(json_path.read_text())
    more = json.loads(crowded.read_text())
    names = {c.id: c.name for c in CATEGORIES}
    for image_entry, annotation in zip(
        data["images"] + more["images"], data["annotations"] + more["annotations"], strict=True
    ):
        caption = image_entry["caption"]
        present = {names[s["category_id"]] for s in annotation["segments_info"]}
        for name in names.values():
            mentioned = re.search(rf"\b{name}(e?s)?\b", caption) is not None
            assert mentioned == (name in present), (name, caption)


def test_caption_counts_colours_and_plurals():
    caption = make_caption(
        [("ring", "blue"), ("star", "red"), ("ring", "green"), ("ring", "blue")], ["water", "grass"]
    )
    assert caption == "a red star, a green ring and two blue rings on grass and water"
    assert make_caption([("cross", "orange")], ["sand"]) == "an orange cross on sand"
    assert make_caption([], ["sky"]) == "a picture of sky"
    assert plural("hourglass") == "hourglasses" and plural("lightning bolt") == "lightning bolts"


def test_every_thing_class_wears_its_own_pattern():
    """The surface patterns of any two classes differ, none is invisible or covers the whole
    shape except the plain one, and a phase change moves a pattern without changing it."""
    size = (64, 64)
    names = [c.name for c in CATEGORIES if c.isthing]
    assert sorted(PATTERNS) == sorted(names) and len(set(PATTERNS.values())) == len(names)
    tones = {
        name: surface_pattern(name, size, (32, 32), np.random.default_rng(0)) for name in names
    }
    for name, tone in tones.items():
        share = tone[12:52, 12:52].mean()
        assert (share == 0) if PATTERNS[name] == "solid" else (0.15 < share < 0.85), name
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (tones[a] != tones[b]).mean() > 0.1, (a, b)
    stripes = [c.name for c in CATEGORIES if PATTERNS.get(c.name) == "horizontal stripes"][0]
    moved = surface_pattern(stripes, size, (32, 32), np.random.default_rng(1))
    assert not np.array_equal(moved, tones[stripes])
    assert (moved == moved[:, :1]).all()  # still horizontal stripes


def _orientations(tone: np.ndarray, bins: int = 8) -> np.ndarray:
    """Histogram of edge orientations in [0, pi), weighted by gradient magnitude."""
    gy, gx = np.gradient(tone.astype(float))
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    hist, _ = np.histogram(angle, bins=bins, range=(0, np.pi), weights=np.hypot(gx, gy))
    return hist / hist.sum()


def test_patterns_look_the_same_in_a_mirror():
    """Training flips images horizontally: a pattern whose mirror image is another pattern
    (rising vs falling stripes) would teach one class the other's look. Every pattern's edge
    orientations are those of its mirror image."""
    names = [c.name for c in CATEGORIES if c.isthing and PATTERNS[c.name] != "solid"]
    for name in names:
        tone = surface_pattern(name, (96, 96), (48, 48), np.random.default_rng(0))
        difference = np.abs(_orientations(tone) - _orientations(tone[:, ::-1])).sum()
        assert difference < 0.25, (name, PATTERNS[name], difference)
    rising = np.mod(np.add.outer(np.arange(96), np.arange(96)), 7) < 3.5  # what it catches
    assert np.abs(_orientations(rising) - _orientations(rising[:, ::-1])).sum() > 1.0


def test_patterns_can_be_turned_off(tmp_path):
    """Without patterns a thing is one tone (plus shading and its darker outline); with them,
    the same scene's things show two tones."""

    def tones(patterns):
        root = tmp_path / str(patterns)
        json_path = write_synthetic_panoptic(root, 6, size=SIZE, seed=2, patterns=patterns)
        spreads = []
        for entry, annotation in zip(
            *(json.loads(json_path.read_text())[k] for k in ("images", "annotations")), strict=True
        ):
            image = np.asarray(Image.open(root / "train" / "images" / entry["file_name"]))
            panoptic = _decode_png(root / "train" / "panoptic" / annotation["file_name"])
            for segment in annotation["segments_info"]:
                name = {c.id: c.name for c in CATEGORIES}[segment["category_id"]]
                mask = panoptic == segment["id"]
                inner = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0)
                inner &= np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
                if name in PATTERNS and PATTERNS[name] != "solid" and inner.sum() > 30:
                    brightness = image[inner].astype(float).mean(1)
                    spreads.append(np.percentile(brightness, 95) - np.percentile(brightness, 5))
        return np.array(spreads)

    plain, patterned = tones(False), tones(True)
    assert len(plain) and len(patterned)
    assert np.median(plain) < 40 < np.median(patterned)


def test_patterns_are_drawn_in_their_class_accent_colour(tmp_path):
    """Each patterned class has its own accent colour, apart from the others, from the object
    colours and from all of them darkened into outlines; inside a drawn thing, more pixels are
    near its own accent than near any other class's."""
    assert sorted(ACCENTS) == sorted(n for n, p in PATTERNS.items() if p != "solid")
    colours = [np.asarray(c, float) for c in [*ACCENTS.values(), *COLOURS.values()]]
    for name, accent in ACCENTS.items():
        others = [c for c in colours if not np.array_equal(c, accent)]
        others += [c * OUTLINE_SHADE for c in colours]
        assert min(np.linalg.norm(accent - c) for c in others) > 70, name
    json_path = write_synthetic_panoptic(tmp_path, 10, size=(96, 128), seed=4)
    data = json.loads(json_path.read_text())
    names = {c.id: c.name for c in CATEGORIES}
    checked = set()
    for entry, annotation in zip(data["images"], data["annotations"], strict=True):
        image = np.asarray(Image.open(tmp_path / "train" / "images" / entry["file_name"]))
        panoptic = _decode_png(tmp_path / "train" / "panoptic" / annotation["file_name"])
        for segment in annotation["segments_info"]:
            name = names[segment["category_id"]]
            pixels = image[panoptic == segment["id"]].astype(float)
            if name not in ACCENTS or len(pixels) < 100:
                continue
            near = {
                other: (np.linalg.norm(pixels - np.asarray(accent), axis=1) < 30).mean()
                for other, accent in ACCENTS.items()
            }
            assert near[name] > 0.1 and max(near, key=near.get) == name, (name, str(near))
            checked.add(name)
    assert len(checked) >= 6


def test_base_novel_split():
    kinds = {c.id: c.isthing for c in CATEGORIES}
    novel = base_novel_split(novel_things=4, novel_stuff=1, seed=0)
    assert novel == base_novel_split(novel_things=4, novel_stuff=1, seed=0) == sorted(novel)
    assert sum(kinds[i] for i in novel) == 4 and sum(not kinds[i] for i in novel) == 1
    assert any(base_novel_split(seed=s) != novel for s in range(1, 5))
    assert len(base_novel_split(novel_things=6, novel_stuff=2)) == 8
    with pytest.raises(ValueError, match="at least one base class"):
        base_novel_split(novel_things=len([c for c in CATEGORIES if c.isthing]))
