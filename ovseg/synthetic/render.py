"""Drawing primitives of the synthetic world: shape masks, stuff textures, background regions.

Shapes are polygons in a unit frame (radius about 1, y down), drawn filled (1) or cut out (0)
in order, then rotated, scaled and moved. Every function takes its randomness from a numpy
Generator, so a scene is a pure function of its seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _regular(count: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(count) / count
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _regular(5), _regular(5, 0.42, -np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 16.5


def _polygon(points: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


# A shape: [(polygon (M, 2), fill 1 or cut-out 0), ...] in drawing order.
Shape = list[tuple[np.ndarray, int]]

SHAPES: dict[str, Shape] = {
    "circle": [(_regular(40), 1)],
    "square": [(_polygon([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]), 1)],
    "triangle": [(_regular(3, 1.05), 1)],
    "star": [(_star(), 1)],
    "ring": [(_regular(40), 1), (_regular(40, 0.55), 0)],
    "cross": [
        (
            _polygon(
                [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3)]
                + [(0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]
            ),
            1,
        )
    ],
    "arrow": [
        (
            _polygon(
                [(-1, -0.2), (0.15, -0.2), (0.15, -0.6), (1, 0), (0.15, 0.6), (0.15, 0.2)]
                + [(-1, 0.2)]
            ),
            1,
        )
    ],
    "heart": [(_heart(), 1)],
    "crescent": [(_regular(40), 1), (_regular(40, 0.85) + np.array([0.45, -0.15]), 0)],
    "diamond": [(_polygon([(0, -1), (0.55, 0), (0, 1), (-0.55, 0)]), 1)],
    "hexagon": [(_regular(6, 1.0, 0.0), 1)],
    "house": [
        (
            _polygon(
                [(-0.8, 0.9), (0.8, 0.9), (0.8, -0.15), (0.95, -0.15), (0, -0.95)]
                + [(-0.95, -0.15), (-0.8, -0.15)]
            ),
            1,
        ),
        (_polygon([(-0.2, 0.95), (0.2, 0.95), (0.2, 0.35), (-0.2, 0.35)]), 0),  # the door
    ],
    "lightning bolt": [
        (
            _polygon(
                [(-0.2, -1), (0.5, -1), (0.12, -0.22), (0.55, -0.22), (-0.35, 1)]
                + [(-0.05, 0.12), (-0.45, 0.12)]
            ),
            1,
        )
    ],
    "hourglass": [
        (_polygon([(-0.7, -1), (0.7, -1), (0.12, 0), (0.7, 1), (-0.7, 1), (-0.12, 0)]), 1)
    ],
}

# Shapes that read as themselves only roughly upright turn at most this much (degrees).
MAX_ROTATION = {"house": 30.0, "heart": 30.0, "hourglass": 30.0}


# Every thing class also has its own surface pattern, drawn in image coordinates (it does not
# turn with the shape) at a random phase, in its class's accent colour (ACCENTS) over the
# object's random colour. The pattern is what a small CLIP's features can read in a scene
# (measured without patterns: silhouettes of 2-cell objects are read at 10-17%, textures at
# 94-100%). Training flips images horizontally, so no pattern is the mirror image of another
# (rising vs falling stripes were: crosses flipped looked like arrows).
PERIOD = 7.0  # pixels at the generated size


def _stripes(u: np.ndarray) -> np.ndarray:
    return np.mod(u, PERIOD) < PERIOD / 2


def _lines(u: np.ndarray) -> np.ndarray:
    return np.mod(u, PERIOD) < 1.5


def _plus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A plus sign around (u, v) = (0, 0): two bars 5 px long and 2 px wide."""
    arm, half_width = 2.5, 1.0
    return ((np.abs(u) < arm) & (np.abs(v) < half_width)) | (
        (np.abs(u) < half_width) & (np.abs(v) < arm)
    )


def surface_pattern(
    name: str,
    size_hw: tuple[int, int],
    center_xy: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """(H, W) bool: where the accent colour of ``name``'s pattern lies."""
    h, w = size_hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x += rng.uniform(0, PERIOD)
    y += rng.uniform(0, PERIOD)
    dx, dy = x - center_xy[0], y - center_xy[1]  # the phase moves the object frame a little
    rising, falling = (x + y) / 2**0.5, (x - y) / 2**0.5
    patterns: dict[str, Callable[[], np.ndarray]] = {
        "solid": lambda: np.zeros((h, w), dtype=bool),
        "horizontal stripes": lambda: _stripes(y),
        "vertical stripes": lambda: _stripes(x),
        "vertical zigzag": lambda: _stripes(x + np.abs(np.mod(y, 2 * PERIOD) - PERIOD)),
        "plus tiles": lambda: _plus(np.mod(x, PERIOD) - 3.5, np.mod(y, PERIOD) - 3.5),
        "dots": lambda: np.hypot(np.mod(x, PERIOD) - 3.5, np.mod(y, PERIOD) - 3.5) < 1.8,
        "checker": lambda: _stripes(x) ^ _stripes(y),
        "grid": lambda: _lines(x) | _lines(y),
        "crosshatch": lambda: _lines(rising) | _lines(falling),
        "zigzag": lambda: _stripes(y + np.abs(np.mod(x, 2 * PERIOD) - PERIOD)),
        "concentric": lambda: _stripes(np.hypot(dx, dy)),
        "spokes": lambda: np.mod(np.arctan2(dy, dx), np.pi / 4) < np.pi / 8,
        "two-tone": lambda: dy > 0,
        "blotches": lambda: _blotches(rng, h, w),
    }
    return patterns[PATTERNS[name]]()


def _blotches(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    coarse = rng.normal(size=(h // 6 + 2, w // 6 + 2))
    y, x = np.mgrid[0:h, 0:w] / 6.0
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0
    smooth = (
        coarse[y0, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1, x0] * fy * (1 - fx)
        + coarse[y0, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1, x0 + 1] * fy * fx
    )
    return smooth > 0.3


PATTERNS: dict[str, str] = {
    "circle": "solid",
    "square": "horizontal stripes",
    "triangle": "vertical stripes",
    "star": "dots",
    "ring": "checker",
    "cross": "plus tiles",
    "arrow": "vertical zigzag",
    "heart": "grid",
    "crescent": "crosshatch",
    "diamond": "zigzag",
    "hexagon": "concentric",
    "house": "two-tone",
    "lightning bolt": "spokes",
    "hourglass": "blotches",
}


# The pattern's colour, one per class, as real classes have their own colours (a zebra's
# stripes, a traffic cone's orange) whatever the colour of the object as a whole. FC-CLIP
# classifies a mask by features pooled INSIDE it, and a tiny CLIP pools a silhouette into
# little: with the pattern in a second tone of the object's own colour, its res2-5 features
# mean-pooled over true masks told the 10 base shapes apart at 39% (linear probe), and colour
# statistics inside the mask at 36%; with accent colours those statistics alone reach 99%.
# At RGB distance > 70 from each other, from the 9 object colours, from all of them darkened
# into outlines (OUTLINE_SHADE) and from the stuff textures' main colours.
ACCENTS: dict[str, tuple[int, int, int]] = {
    "square": (0, 192, 255),  # azure
    "triangle": (255, 90, 90),  # coral
    "star": (128, 255, 0),  # chartreuse
    "ring": (255, 0, 255),  # magenta
    "cross": (0, 255, 192),  # aquamarine
    "arrow": (255, 0, 128),  # hot pink
    "heart": (0, 0, 255),  # pure blue
    "crescent": (255, 250, 150),  # cream
    "diamond": (128, 0, 255),  # violet
    "hexagon": (128, 255, 128),  # mint
    "house": (64, 255, 255),  # cyan
    "lightning bolt": (0, 192, 0),  # bright green
    "hourglass": (192, 64, 255),  # orchid
}
# A thing's one-pixel outline is its paint darkened by this factor.
OUTLINE_SHADE = 0.55


def draw_shape(
    shape: Shape,
    size_hw: tuple[int, int],
    center_xy: tuple[float, float],
    radius: float,
    angle: float,
) -> np.ndarray:
    """(H, W) bool mask of ``shape`` rotated by ``angle`` (radians), scaled, centred."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (size_hw[1], size_hw[0]), 0)
    draw = ImageDraw.Draw(canvas)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for polygon, fill in shape:
        points = polygon @ rotation.T * radius + np.asarray(center_xy)
        draw.polygon([tuple(p) for p in points.tolist()], fill=fill)
    return np.asarray(canvas, dtype=bool)


def _grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    blades = rng.normal(size=(h + 6, w))
    blades = sum(blades[i : i + h] for i in range(6)) / 6**0.5  # vertical streaks
    green = 135 + 28 * blades
    return np.stack([55 + 10 * blades, green, 45 + 8 * blades], axis=-1)


def _water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    waves = np.sin(2 * np.pi * y / 7 + 1.5 * np.sin(x / 9 + phase[0]) + phase[1])
    return np.stack([35 + 10 * waves, 95 + 25 * waves, 185 + 35 * waves], axis=-1)


def _sand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array([212.0, 190.0, 140.0]) + 10 * rng.normal(size=(h, w, 1))
    speckles = rng.random((h, w, 1)) < 0.12
    return np.where(speckles, np.array([140.0, 115.0, 80.0]), base)


def _brick(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    brick_h, brick_w = 8, 16
    y, x = np.mgrid[0:h, 0:w]
    shift = rng.integers(0, brick_w)
    row = y // brick_h
    mortar = (y % brick_h == 0) | ((x + shift + (row % 2) * brick_w // 2) % brick_w == 0)
    tint = rng.normal(size=(h // brick_h + 1, w // brick_w + 2))[row, (x + shift) // brick_w]
    red = np.stack([165 + 15 * tint, 55 + 6 * tint, 40 + 5 * tint], axis=-1)
    return np.where(mortar[..., None], np.array([205.0, 200.0, 190.0]), red)


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    t = np.linspace(0, 1, h)[:, None, None] * np.ones((1, w, 1))
    top, bottom = np.array([95.0, 155.0, 230.0]), np.array([215.0, 232.0, 250.0])
    return top + (bottom - top) * t + 3 * rng.normal(size=(h, w, 1))


TEXTURES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "grass": _grass,
    "water": _water,
    "sand": _sand,
    "brick": _brick,
    "sky": _sky,
}


def background_regions(
    rng: np.random.Generator, size_hw: tuple[int, int], count: int
) -> np.ndarray:
    """(H, W) int64 region index in [0, count): nearest of ``count`` random centres, with wavy
    boundaries."""
    h, w = size_hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    centers = rng.uniform(0, 1, size=(count, 2)) * np.array([h, w])
    frequency = rng.uniform(0.05, 0.15, size=count)
    distances = [
        np.hypot(y - cy, x - cx) + 6 * np.sin(frequency[k] * x + 3 * k)
        for k, (cy, cx) in enumerate(centers)
    ]
    return np.argmin(np.stack(distances), axis=0)


def outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of ``mask`` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior
