"""The synthetic 4D world: the 3D world's things moving along straight paths and changing
state over time, seen by fixed cameras at every time step, so the 4D language fields can be
fitted and scored offline.

Each thing changes in one of three ways:

- ``move``: it only moves (its state is one caption the whole time);
- ``colour``: at a moment t_c it turns another colour ("a blue star" -> "a red star");
- ``morph``: over [t0, t1] its footprint morphs into another class's (the two shapes' signed
  distances interpolated; "a blue ring" -> "a blue ring turning into a circle" -> "a blue
  circle"). Its class is the first up to the middle of the morph, the second from there; its
  surface pattern follows its class.

Times are normalised to [0, 1] (D-NeRF's convention); ``write_scene4d`` writes::

    scene/images/c00_t000.png        RGB frames (camera 0, time step 0), 160 x 128
    scene/segments/c00_t000.png      uint8 object id per pixel (scene.json's "objects")
    scene/transforms_train.json      frames with "time" and "camera_id" (training cameras at
    scene/transforms_test.json         training times; held-out cameras, and held-out times)
    scene/points3d.ply               surface points at time 0 (the Gaussians' start)
    scene/captions.json              each object's states over time (ovseg.fields.captions);
                                       a ground region's one state is its class
    scene/scene.json                 objects (class per time step, path), times, splits

Scene k of a seed depends only on (seed, k): the same arguments write the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from ovseg.fields.posed_images import PosedImages, write_transforms
from ovseg.fileio import atomic_write, write_text_atomic
from ovseg.synthetic.render import MAX_ROTATION, SHAPES, draw_shape
from ovseg.synthetic.scenes import CATEGORIES, COLOURS, stuff_background, thing_paint
from ovseg.synthetic.world3d import (
    TEXELS_PER_UNIT,
    Scene3D,
    orbit_cameras,
    render_view,
    surface_points,
    write_ply,
)

EVENTS = ("move", "colour", "morph")
HALF_EXTENT = 2.0
PATH_SAMPLES = 9  # times at which two things' discs must stay apart


class DynamicScene:
    """Ground (fixed) and things (moving, changing) of one 4D scene; ``at(t)`` is the
    :class:`~ovseg.synthetic.world3d.Scene3D` at time t in [0, 1]."""

    def __init__(self, seed: int, index: int, ground, regions, stuff, things: list[dict]):
        self.seed, self.index = seed, index
        self.ground, self.regions, self.stuff, self.things = ground, regions, stuff, things

    @property
    def objects(self) -> list[dict]:
        """Segment records: stuff regions (ids 0..) then things (their ``id``)."""
        stuff = [{"id": k, "category": c.name, "isthing": False} for k, c in enumerate(self.stuff)]
        return stuff + [
            {"id": t["id"], "isthing": True, **{k: t[k] for k in _THING_KEYS}} for t in self.things
        ]

    def at(self, t: float) -> Scene3D:
        size = self.regions.shape
        texture = self.ground.copy()
        height = np.zeros(size, np.float32)
        segment = self.regions.astype(np.uint8)
        segments = [
            {"id": k, "category": c.name, "isthing": False, "colour": None}
            for k, c in enumerate(self.stuff)
        ]
        for thing in self.things:
            mask = footprint(thing, t, size)
            category, colour = category_at(thing, t), colour_at(thing, t)
            rng = np.random.default_rng([self.seed, self.index, 4, thing["id"]])
            paint = thing_paint(rng, category, colour, size, _texel_centre(thing, t), True)
            texture[mask] = paint[mask]
            height[mask] = thing["height"]
            segment[mask] = thing["id"]
            segments.append(
                {"id": thing["id"], "category": category, "isthing": True, "colour": colour}
            )
        return Scene3D(
            np.clip(texture, 0, 255).astype(np.float32), height, segment, segments, HALF_EXTENT
        )


_THING_KEYS = (
    "event",
    "category_from",
    "category_to",
    "colour_from",
    "colour_to",
    "change_start",
    "change_end",
    "start",
    "end",
    "radius",
    "height",
)


def _lerp(a, b, t: float):
    return [float(x + (y - x) * t) for x, y in zip(a, b, strict=True)]


def _texel_centre(thing: dict, t: float) -> tuple[float, float]:
    x, y = _lerp(thing["start"], thing["end"], t)
    return (x + HALF_EXTENT) * TEXELS_PER_UNIT, (HALF_EXTENT - y) * TEXELS_PER_UNIT


def morph_fraction(thing: dict, t: float) -> float:
    """0 before a morph, 1 after it, linear in between (always 0 for other events)."""
    if thing["event"] != "morph":
        return 0.0
    start, end = thing["change_start"], thing["change_end"]
    return float(np.clip((t - start) / (end - start), 0.0, 1.0))


def category_at(thing: dict, t: float) -> str:
    """The thing's class at time t (a morph's second class from its middle on)."""
    return thing["category_to"] if morph_fraction(thing, t) >= 0.5 else thing["category_from"]


def colour_at(thing: dict, t: float) -> str:
    if thing["event"] == "colour" and t >= thing["change_start"]:
        return thing["colour_to"]
    return thing["colour_from"]


def footprint(thing: dict, t: float, size: tuple[int, int]) -> np.ndarray:
    """(T, T) bool texels the thing covers at time t (a morph blends the two shapes' signed
    distance fields)."""
    from scipy.ndimage import distance_transform_edt

    centre = _texel_centre(thing, t)
    radius = thing["radius"] * TEXELS_PER_UNIT
    angle = thing["angle"]
    first = draw_shape(SHAPES[thing["category_from"]], size, centre, radius, angle)
    fraction = morph_fraction(thing, t)
    if fraction == 0.0:
        return first
    second = draw_shape(SHAPES[thing["category_to"]], size, centre, radius, angle)
    if fraction == 1.0:
        return second

    def signed(mask):
        return distance_transform_edt(~mask) - distance_transform_edt(mask)

    return (1 - fraction) * signed(first) + fraction * signed(second) < 0


def captions(thing: dict) -> list[dict]:
    """The thing's states as caption spans [{start, end, caption}] covering [0, 1]."""
    first, second = thing["category_from"], thing["category_to"]
    colour, colour_to = thing["colour_from"], thing["colour_to"]
    if thing["event"] == "move":
        return [{"start": 0.0, "end": 1.0, "caption": f"a {colour} {first}"}]
    if thing["event"] == "colour":
        change = thing["change_start"]
        return [
            {"start": 0.0, "end": change, "caption": f"a {colour} {first}"},
            {"start": change, "end": 1.0, "caption": f"a {colour_to} {first}"},
        ]
    start, end = thing["change_start"], thing["change_end"]
    return [
        {"start": 0.0, "end": start, "caption": f"a {colour} {first}"},
        {"start": start, "end": end, "caption": f"a {colour} {first} turning into a {second}"},
        {"start": end, "end": 1.0, "caption": f"a {colour} {second}"},
    ]


def make_dynamic_scene(seed: int, index: int, *, max_things: int = 3) -> DynamicScene:
    """Scene ``index`` of ``seed``: 1-3 ground regions, 2-``max_things`` things, each thing
    moving (or still) and changing as the module doc says. The first thing always changes
    state (colour or morph), so every scene has a time-sensitive query."""
    rng = np.random.default_rng([seed, index, 5])
    side = int(round(2 * HALF_EXTENT * TEXELS_PER_UNIT))
    stuffs = [c for c in CATEGORIES if not c.isthing and c.name != "sky"]
    ground, regions, stuff = stuff_background(rng, (side, side), stuffs)
    names = [c.name for c in CATEGORIES if c.isthing]
    colours = list(COLOURS)
    wanted = int(rng.integers(2, max_things + 1))
    things: list[dict] = []
    samples = np.linspace(0, 1, PATH_SAMPLES)
    for _ in range(60):  # rejection sampling: discs apart at every sampled time
        if len(things) == wanted:
            break
        event = EVENTS[1 + int(rng.integers(2))] if not things else EVENTS[int(rng.integers(3))]
        first, second = rng.choice(len(names), size=2, replace=False)
        colour_from, colour_to = rng.choice(len(colours), size=2, replace=False)
        radius = float(rng.uniform(0.26, 0.36))
        start = rng.uniform(-0.8, 0.8, size=2)
        still = rng.uniform() < 0.25
        heading = rng.uniform(0, 2 * math.pi)
        travel = 0.0 if still else rng.uniform(0.3, 0.8)
        end = np.clip(start + travel * np.array([math.cos(heading), math.sin(heading)]), -0.9, 0.9)
        change_start = float(rng.uniform(0.25, 0.55))
        change_end = (
            change_start + float(rng.uniform(0.15, 0.3)) if event == "morph" else (change_start)
        )
        max_angle = np.deg2rad(
            min(MAX_ROTATION.get(names[first], 180.0), MAX_ROTATION.get(names[second], 180.0))
        )
        thing = {
            "id": len(stuff) + len(things),
            "event": event,
            "category_from": names[first],
            "category_to": names[second] if event == "morph" else names[first],
            "colour_from": colours[colour_from],
            "colour_to": colours[colour_to] if event == "colour" else colours[colour_from],
            "change_start": change_start if event != "move" else 1.0,
            "change_end": change_end if event != "move" else 1.0,
            "start": [float(v) for v in start],
            "end": [float(v) for v in end],
            "angle": float(rng.uniform(-max_angle, max_angle)),
            "radius": radius,
            "height": float(rng.uniform(0.08, 0.22)),
        }
        clash = any(
            _distance(thing, other, s) < 1.25 * (thing["radius"] + other["radius"]) + 0.05
            for other in things
            for s in samples
        )
        if not clash:
            things.append(thing)
    return DynamicScene(seed, index, ground.astype(np.float32), regions, stuff, things)


def _distance(a: dict, b: dict, t: float) -> float:
    """Distance between two things' centres at time t (world units)."""
    (ax, ay), (bx, by) = _lerp(a["start"], a["end"], t), _lerp(b["start"], b["end"], t)
    return math.hypot(ax - bx, ay - by)


def frame_name(camera: int, step: int) -> str:
    return f"c{camera:02d}_t{step:03d}"


def write_scene4d(
    out: str | Path,
    seed: int,
    index: int,
    *,
    train_cameras: int = 6,
    test_cameras: int = 2,
    steps: int = 24,
    held_out_every: int = 4,
    width: int = 160,
    height: int = 128,
    progress: bool = False,
) -> Path:
    """Write scene ``index`` of ``seed`` (module doc layout) into ``out``; returns ``out``.

    ``steps`` time steps t_k = k / (steps - 1); every ``held_out_every``-th one (k = 2, 2 +
    every, ...) is held out from training. Held-out cameras sit between the training ones at
    another elevation. Training frames: training cameras at training times; test frames:
    everything else."""
    from PIL import Image
    from tqdm import tqdm

    if steps < 2 or train_cameras < 1 or test_cameras < 0:
        raise ValueError("write_scene4d: need steps >= 2, train_cameras >= 1, test_cameras >= 0")
    out = Path(out)
    scene = make_dynamic_scene(seed, index)
    train = orbit_cameras(train_cameras, width=width, height=height, prefix="c")
    test = orbit_cameras(
        test_cameras,
        width=width,
        height=height,
        elevations=(73.0,),
        azimuth_offset=180.0 / train_cameras,
        prefix="c",
        start=train_cameras,
    )
    cameras = train + test
    times = [k / (steps - 1) for k in range(steps)]
    held_out_steps = [k for k in range(steps) if k % held_out_every == 2 % held_out_every]
    frames, paths, camera_ids, frame_times, splits = [], [], [], [], {"train": [], "test": []}
    classes: list[list[str]] = []
    for step in tqdm(range(steps), desc="render 4D frames", disable=not progress):
        at = scene.at(times[step])
        classes.append([s["category"] for s in at.segments])
        for number, camera in enumerate(cameras):
            name = frame_name(number, step)
            image, segment, _ = render_view(at, camera)
            image_path = out / "images" / f"{name}.png"
            atomic_write(image_path, lambda tmp, a=image: Image.fromarray(a).save(tmp, "PNG"))
            atomic_write(
                out / "segments" / f"{name}.png",
                lambda tmp, a=segment: Image.fromarray(a).save(tmp, "PNG"),
            )
            held_out = number >= train_cameras or step in held_out_steps
            splits["test" if held_out else "train"].append(len(frames))
            frames.append(dataclasses.replace(camera, name=name))
            paths.append(image_path)
            camera_ids.append(f"c{number:02d}")
            frame_times.append(times[step])
    posed = PosedImages(frames, paths, times=frame_times, camera_ids=camera_ids)
    # frames in time order per camera within each file (what readers check)
    for split in ("train", "test"):
        order = sorted(splits[split], key=lambda i: (camera_ids[i], frame_times[i]))
        extra = {"ply_file_path": "points3d.ply"} if split == "train" else None
        write_transforms(posed, out / f"transforms_{split}.json", indices=order, extra=extra)
    points, colours = surface_points(scene.at(0.0))
    write_ply(out / "points3d.ply", points, colours)
    from ovseg.fields.captions import write_captions

    # every object is captioned, as 4D LangSplat captions every tracked mask: the ground's
    # regions keep one state (their class) the whole video
    spans = {k: [{"start": 0.0, "end": 1.0, "caption": c.name}] for k, c in enumerate(scene.stuff)}
    spans.update({t["id"]: captions(t) for t in scene.things})
    names = {k: c.name for k, c in enumerate(scene.stuff)}
    names.update({t["id"]: t["category_from"] for t in scene.things})
    write_captions(out / "captions.json", spans, names=names)
    write_text_atomic(
        out / "scene.json",
        json.dumps(
            {
                "seed": seed,
                "index": index,
                "half_extent": HALF_EXTENT,
                "times": times,
                "held_out_steps": held_out_steps,
                "train_cameras": train_cameras,
                "test_cameras": test_cameras,
                "objects": scene.objects,
                "classes_per_step": classes,
                "classes": sorted({c for step in classes for c in step}),
            },
            indent=1,
        ),
    )
    return out
