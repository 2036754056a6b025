"""A seeded synthetic "open-vocabulary world" written in the real COCO-panoptic format.

Things are coloured shapes (star, ring, cross ...) at random size, position, rotation and colour,
occluding each other and the background; stuff is 1-3 textured background regions (grass,
water, sand, brick, sky). ``write_synthetic_panoptic`` writes::

    root/{split}/images/{split}_00000.png     RGB images
    root/{split}/panoptic/{split}_00000.png   panoptic PNGs (id = R + 256 G + 256^2 B)
    root/{split}/panoptic.json                images (with a caption each), annotations, categories
    root/vocab.txt                            the classes in the ovseg vocabulary-file format

which PanopticDataset reads like COCO. Image i depends only on (seed, split, i), and the same
arguments give the same bytes. Category ids have gaps (things 1..14, stuff 101..105) so the
contiguous-index mapping is exercised.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ovseg.data.label_io import id_to_rgb
from ovseg.synthetic.render import (
    ACCENTS,
    MAX_ROTATION,
    OUTLINE_SHADE,
    SHAPES,
    TEXTURES,
    background_regions,
    draw_shape,
    outline,
    surface_pattern,
)


class SyntheticCategory(NamedTuple):
    id: int
    name: str
    isthing: bool


CATEGORIES: tuple[SyntheticCategory, ...] = tuple(
    [SyntheticCategory(i + 1, name, True) for i, name in enumerate(SHAPES)]
    + [SyntheticCategory(101 + i, name, False) for i, name in enumerate(TEXTURES)]
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 25),
    "yellow": (240, 215, 35),
    "green": (35, 165, 60),
    "blue": (35, 75, 215),
    "purple": (135, 55, 185),
    "pink": (240, 125, 185),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# A thing occluded below either bound is not drawn at all: what is left must read as its shape.
MIN_VISIBLE_AREA = 12  # pixels
MIN_VISIBLE_FRACTION = 0.6  # of its own area


def plural(name: str) -> str:
    return name + ("es" if name.endswith(("s", "x", "ch", "sh")) else "s")


def _phrase(count: int, colour: str, name: str) -> str:
    if count == 1:
        return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {name}"
    number = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
    return f"{number} {colour} {plural(name)}"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def make_caption(things: list[tuple[str, str]], stuff: list[str]) -> str:
    """'a red star, two blue rings and a green ring on grass and water' from the visible
    things as (name, colour) pairs and the visible stuff names."""
    order = {c.name: c.id for c in CATEGORIES}
    colour_order = list(COLOURS)
    counts: dict[tuple[str, str], int] = {}
    for name, colour in things:
        counts[(name, colour)] = counts.get((name, colour), 0) + 1
    keys = sorted(counts, key=lambda k: (order[k[0]], colour_order.index(k[1])))
    phrases = [_phrase(counts[k], k[1], k[0]) for k in keys]
    stuff_words = sorted(stuff, key=order.__getitem__)
    if not phrases:
        return f"a picture of {_join(stuff_words)}"
    return f"{_join(phrases)} on {_join(stuff_words)}" if stuff_words else _join(phrases)


def _unique_ids(rng: np.random.Generator, count: int) -> list[int]:
    """``count`` distinct random segment ids in [1, 2^24) (all three PNG channels used)."""
    ids: list[int] = []
    while len(ids) < count:
        candidate = int(rng.integers(1, 2**24))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def render_scene(
    rng: np.random.Generator, size_hw: tuple[int, int], max_things: int, patterns: bool = True
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], str]:
    """One scene -> image (H, W, 3) uint8, panoptic (H, W) int32, segments_info, caption.
    With ``patterns`` every thing wears its class's surface pattern, else it is plain."""
    h, w = size_hw
    stuffs = [c for c in CATEGORIES if not c.isthing]
    image, regions, region_stuff = stuff_background(rng, size_hw, stuffs)
    num_regions = len(region_stuff)
    # owner: -1 - region index for stuff, else the index of the thing drawn on top
    owner = -1 - regions
    placed = [
        _place_thing(rng, size_hw, patterns) for _ in range(int(rng.integers(0, max_things + 1)))
    ]
    # Later things occlude earlier ones; drop those left (almost) invisible, then composite.
    visible = _visible_things(placed, size_hw)
    for index, (_, _, mask, paint) in enumerate(visible):
        edge = outline(mask)
        image[mask] = paint[mask]
        image[edge] = paint[edge] * OUTLINE_SHADE
        owner[mask] = index

    ids = _unique_ids(rng, num_regions + len(visible))
    panoptic = np.zeros((h, w), dtype=np.int32)
    segments = []
    owners = [(-1 - k, c, None) for k, c in enumerate(region_stuff)]
    owners += [(index, category, colour) for index, (category, colour, *_) in enumerate(visible)]
    for segment_id, (key, category, colour) in zip(ids, owners, strict=True):
        mask = owner == key
        if not mask.any():
            continue
        panoptic[mask] = segment_id
        segments.append(_segment_record(segment_id, category, colour, mask))
    present = {s["category_id"] for s in segments}
    caption = make_caption(
        [(c.name, colour) for c, colour, _, _ in visible],
        [c.name for c in region_stuff if c.id in present],
    )
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image, panoptic, segments, caption


def stuff_background(
    rng: np.random.Generator, size_hw: tuple[int, int], stuffs: list[SyntheticCategory]
) -> tuple[np.ndarray, np.ndarray, list[SyntheticCategory]]:
    """1-3 regions of distinct stuff classes drawn from ``stuffs``: the (H, W, 3) float image
    of their textures, the (H, W) region index, and each region's class."""
    h, w = size_hw
    count = int(rng.integers(1, 4))
    region_stuff = [stuffs[k] for k in rng.choice(len(stuffs), size=count, replace=False)]
    regions = background_regions(rng, size_hw, count)
    image = np.zeros((h, w, 3))
    for k, category in enumerate(region_stuff):
        image[regions == k] = TEXTURES[category.name](rng, h, w)[regions == k]
    return image, regions, region_stuff


def _place_thing(
    rng: np.random.Generator, size_hw: tuple[int, int], patterns: bool
) -> tuple[SyntheticCategory, str, np.ndarray, np.ndarray]:
    """A random thing: (category, colour name, its (H, W) bool mask, its (H, W, 3) float
    paint: the colour with per-pixel shading, and its class's accent pattern if ``patterns``)."""
    h, w = size_hw
    things = [c for c in CATEGORIES if c.isthing]
    category = things[int(rng.integers(len(things)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    radius = rng.uniform(0.1, 0.25) * min(h, w)
    center = (rng.uniform(0, w), rng.uniform(0, h))
    max_angle = np.deg2rad(MAX_ROTATION.get(category.name, 180.0))
    angle = rng.uniform(-max_angle, max_angle)
    mask = draw_shape(SHAPES[category.name], size_hw, center, radius, angle)
    paint = thing_paint(rng, category.name, colour, size_hw, center, patterns)
    return category, colour, mask, paint


def thing_paint(
    rng: np.random.Generator,
    name: str,
    colour: str,
    size_hw: tuple[int, int],
    center_xy: tuple[float, float],
    patterns: bool,
) -> np.ndarray:
    """(H, W, 3) float paint of a thing of class ``name``: its colour with per-pixel shading,
    and its class's accent pattern around ``center_xy`` if ``patterns``."""
    shade = rng.normal(0, 6, size=(*size_hw, 1))
    base = np.asarray(COLOURS[colour], dtype=np.float64)
    paint = base + shade
    if patterns:
        tone = surface_pattern(name, size_hw, center_xy, rng)
        accent = np.asarray(ACCENTS.get(name, base), dtype=np.float64)
        paint = np.where(tone[..., None], accent + shade, paint)
    return paint


def _visible_things(placed: list[tuple], size_hw: tuple[int, int]) -> list[tuple]:
    """The placed things (drawn in order: later ones occlude earlier ones) left visible enough
    to read as their shape (MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION), in drawing order."""
    covered = np.zeros(size_hw, dtype=bool)
    visible = []
    for category, colour, mask, paint in reversed(placed):
        visible_area = (mask & ~covered).sum()
        if visible_area >= max(MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION * mask.sum()):
            visible.append((category, colour, mask, paint))
            covered |= mask
    visible.reverse()
    return visible


def _segment_record(
    segment_id: int, category: SyntheticCategory, colour: str | None, mask: np.ndarray
) -> dict[str, Any]:
    """The COCO-panoptic segments_info entry of a non-empty (H, W) bool ``mask``: id,
    category_id, iscrowd, bbox (x, y, w, h), area, and for things their ``colour``."""
    ys, xs = np.nonzero(mask)
    bbox = [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]
    segment = {
        "id": segment_id,
        "category_id": category.id,
        "iscrowd": 0,
        "bbox": bbox,
        "area": int(mask.sum()),
    }
    if colour is not None:
        segment["colour"] = colour  # an extra key: object captions for CLIP training
    return segment


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index])


def vocabulary_text() -> str:
    """CATEGORIES in the ovseg vocabulary-file format (``thing<TAB>star`` ...), id order."""
    lines = ["# synthetic world: shapes are things, textures are stuff"]
    lines += [f"{'thing' if c.isthing else 'stuff'}\t{c.name}" for c in CATEGORIES]
    return "\n".join(lines) + "\n"


def write_synthetic_panoptic(
    root: str | Path,
    num_images: int,
    *,
    size: tuple[int, int] = (128, 160),
    seed: int = 0,
    split: str = "train",
    max_things: int = 5,
    patterns: bool = True,
) -> Path:
    """Write ``num_images`` scenes of ``size`` (H, W) under root/split; returns the JSON path.
    ``patterns``: things wear their class's surface pattern (see ``surface_pattern``)."""
    from PIL import Image

    root = Path(root)
    image_dir, panoptic_dir = root / split / "images", root / split / "panoptic"
    image_dir.mkdir(parents=True, exist_ok=True)
    panoptic_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = _image_rng(seed, split, index)
        image, panoptic, segments, caption = render_scene(rng, size, max_things, patterns)
        file_name = f"{split}_{index:05d}.png"
        Image.fromarray(image).save(image_dir / file_name)
        Image.fromarray(id_to_rgb(panoptic)).save(panoptic_dir / file_name)
        images.append(
            {
                "id": index,
                "file_name": file_name,
                "height": size[0],
                "width": size[1],
                "caption": caption,
            }
        )
        annotations.append({"image_id": index, "file_name": file_name, "segments_info": segments})
    categories = [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in CATEGORIES]
    json_path = root / split / "panoptic.json"
    data = {"images": images, "annotations": annotations, "categories": categories}
    json_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (root / "vocab.txt").write_text(vocabulary_text(), encoding="utf-8")
    return json_path


def base_novel_split(novel_things: int = 4, novel_stuff: int = 1, seed: int = 0) -> list[int]:
    """The sorted category ids held out as novel (never trained on), chosen by ``seed``."""
    things = [c.id for c in CATEGORIES if c.isthing]
    stuffs = [c.id for c in CATEGORIES if not c.isthing]
    if not (0 <= novel_things < len(things) and 0 <= novel_stuff < len(stuffs)):
        raise ValueError(
            f"novel_things must be in 0..{len(things) - 1} and novel_stuff in "
            f"0..{len(stuffs) - 1} (at least one base class of each kind), got "
            f"{novel_things}, {novel_stuff}"
        )
    rng = np.random.default_rng(seed)
    novel = rng.choice(things, size=novel_things, replace=False).tolist()
    novel += rng.choice(stuffs, size=novel_stuff, replace=False).tolist()
    return sorted(int(i) for i in novel)
