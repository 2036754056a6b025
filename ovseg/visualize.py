"""Pictures of results: colour overlays with outlines, boxes and a legend.

The data behind them (segments, label maps, JSON records) is :mod:`ovseg.results`.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette(count: int) -> np.ndarray:
    """``count`` distinct, deterministic RGB colours (uint8, (count, 3)); colour i is the same
    for every ``count`` (a prefix of one sequence). Each colour is the one farthest, in
    CIELAB, from all before it (greedy farthest point over an RGB grid), so that the first
    classes' colours are far apart: the golden-ratio hues that came before gave classes 3 and
    16 (star and sand in the synthetic world) two nearly equal purples."""
    sequence = _palette_sequence()
    return np.resize(sequence, (max(count, 0), 3))  # beyond the grid's colours: repeated


@functools.lru_cache(maxsize=1)
def _palette_sequence() -> np.ndarray:
    """Every usable colour of an 11-level RGB grid, in greedy farthest-point order."""
    levels = np.linspace(0, 255, 11)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = _srgb_to_lab(grid / 255.0)
    usable = (lab[:, 0] > 35) & (lab[:, 0] < 92)  # neither near black nor near white
    grid, lab = grid[usable], lab[usable]
    first = int(np.argmin(np.abs(grid - [230, 25, 75]).sum(1)))  # a strong red to start
    chosen = [first]
    nearest = np.linalg.norm(lab - lab[first], axis=1)
    for _ in range(1, len(grid)):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[pick], axis=1))
    return np.rint(grid[chosen]).astype(np.uint8)


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) sRGB in 0..1 -> (N, 3) CIELAB (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1
    )


# Shipped with ovseg (ovseg/assets/fonts/README.md): Latin, Greek, Cyrillic and CJK class
# names are drawn as words; Pillow's default font draws boxes for all but ASCII.
FONT_FILE = Path(__file__).resolve().parent / "assets" / "fonts" / "wqy-microhei.ttc"


@functools.lru_cache(maxsize=16)
def _font(size: int):
    """The legend font at ``size`` pixels (Pillow's default if the shipped file is missing)."""
    if FONT_FILE.is_file():
        return ImageFont.truetype(str(FONT_FILE), size)
    return ImageFont.load_default(size=size)


def overlay(
    image: np.ndarray,
    segments: list[dict],
    *,
    alpha: float = 0.55,
    note: str | None = None,
    prompts=None,
    prompt_scale: float = 1.0,
) -> Image.Image:
    """Blend each segment's colour over the image, outline it, and add a legend panel.

    Args:
        image: (H, W, 3) uint8 at the segments' resolution.
        segments: dicts with ``mask`` (H, W) bool, ``label`` str, ``color`` (3,) uint8,
            optional ``box`` [x0, y0, x1, y1] drawn as a rectangle with an optional
            ``box_label`` written on it; drawn in list order.
        note: a line under the legend (the model that made the result).
        prompts: an :class:`ovseg.sam.prompts.Prompts` to mark on top (positive points green,
            negative red, boxes yellow), its coordinates times ``prompt_scale``.
    """
    canvas = image.astype(np.float32).copy()
    for segment in segments:
        mask = segment["mask"]
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * segment["color"]
    # Outline: pixels of a mask with a neighbour outside it.
    for segment in segments:
        mask = segment["mask"]
        edge = mask & ~(
            np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
        )
        canvas[edge] = 255
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = _font(max(10, min(16, picture.height // 24)))
    for segment in segments:
        if segment.get("box") is not None and segment["box"][2] > segment["box"][0]:
            colour = tuple(int(c) for c in segment["color"])
            draw.rectangle(list(segment["box"]), outline=colour, width=2)
            if segment.get("box_label"):
                _box_label(draw, segment["box"], segment["box_label"], colour, font)
    if prompts is not None:
        _draw_prompts(draw, prompts, prompt_scale, radius=max(4, min(picture.size) // 60))
    return _with_legend(picture, segments, note)


def _draw_prompts(draw: ImageDraw.ImageDraw, prompts, scale: float, radius: int) -> None:
    """Boxes as yellow rectangles, points as green (positive) / red (negative) dots."""
    for box in prompts.boxes * scale:
        draw.rectangle([float(v) for v in box], outline=(255, 220, 0), width=2)
    for (x, y), label in zip(prompts.points * scale, prompts.point_labels, strict=True):
        colour = (40, 200, 60) if label == 1 else (230, 40, 40)
        draw.ellipse(
            [x - radius, y - radius, x + radius, y + radius],
            fill=colour,
            outline=(255, 255, 255),
            width=2,
        )


def _box_label(draw: ImageDraw.ImageDraw, box, text: str, colour: tuple, font) -> None:
    """``text`` on a filled tab at the box's top-left corner (inside the image)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 4, bottom - top + 4
    x = max(0, min(int(box[0]), draw.im.size[0] - width))
    y = int(box[1]) - height if box[1] >= height else int(box[1])
    draw.rectangle([x, y, x + width, y + height], fill=colour)
    light = sum(colour) > 380
    draw.text(
        (x + 2 - left, y + 2 - top), text, fill=(0, 0, 0) if light else (255, 255, 255), font=font
    )


def _with_legend(picture: Image.Image, segments: list[dict], note: str | None) -> Image.Image:
    entries: dict[str, np.ndarray] = {}
    for segment in segments:
        entries.setdefault(segment["label"], segment["color"])
    font_size = max(11, min(22, picture.height // 28))
    font, note_font = _font(font_size), _font(max(10, font_size - 2))
    row = font_size + 8
    measure = ImageDraw.Draw(picture)
    text_width = max([measure.textlength(name, font=font) for name in entries] + [60])
    # The note wraps to the legend's width (at least ~24 characters a line).
    note_lines = textwrap.wrap(note, max(24, int(text_width / (0.55 * font_size)))) if note else []
    note_width = max([measure.textlength(line, font=note_font) for line in note_lines] + [0])
    width = int(max(text_width + row, note_width)) + 24
    note_row = font_size + 2
    legend_height = row * (len(entries) + 1) + 8 + (note_row * len(note_lines) + 8)
    height = max(picture.height, legend_height)
    board = Image.new("RGB", (picture.width + width, height), (255, 255, 255))
    board.paste(picture, (0, 0))
    draw = ImageDraw.Draw(board)
    x = picture.width + 10
    draw.text((x, 6), "classes" if entries else "no segments", fill=(0, 0, 0), font=font)
    for i, (name, colour) in enumerate(entries.items(), start=1):
        y = 6 + i * row
        draw.rectangle(
            [x, y + 2, x + row - 8, y + row - 6],
            fill=tuple(int(c) for c in colour),
            outline=(0, 0, 0),
        )
        draw.text((x + row, y), name, fill=(0, 0, 0), font=font)
    y = 6 + (len(entries) + 1) * row + 4
    for line in note_lines:
        draw.text((x, y), line, fill=(90, 90, 90), font=note_font)
        y += note_row
    return board


TRACK_COLOURS = 64  # a video's tracks take turns at the palette's first 64 colours


def draw_result(
    image: np.ndarray,
    segments: list[dict],
    task: str,
    *,
    note: str | None = None,
    prompts=None,
    prompt_scale: float = 1.0,
) -> Image.Image:
    """Overlay of :func:`ovseg.results.describe`'s segments on an image already at the output
    size, coloured by class (so the legend holds); instances are told apart by their outlines
    and their boxes, labelled with class and score. Segments marked ``shown: False`` (below
    the score threshold) are not drawn. ``note`` goes under the legend (the model).
    ``task="prompts"``: prompted masks, drawn like instances, with ``prompts`` marked on top
    (see :func:`overlay`). A segment with a ``track_id`` (a video's tracked thing) takes its
    track's colour, kept across frames, and is named "class #id"."""
    segments = [s for s in segments if s.get("shown", True)]
    boxed = task in ("instance", "prompts")
    tracked = any("track_id" in s for s in segments)
    colours = palette(max([s["class_id"] + 1 for s in segments] + [TRACK_COLOURS * tracked]))

    def colour(segment: dict) -> np.ndarray:
        if "track_id" in segment:  # offset: track 1 is not drawn in class 0's colour
            return colours[(segment["track_id"] + 7) % TRACK_COLOURS]
        return colours[segment["class_id"]]

    def label(segment: dict) -> str:
        track = f" #{segment['track_id']}" if "track_id" in segment else ""
        return f"{segment['class']}{track}"

    drawable = [
        {
            "mask": s["mask"],
            "label": label(s),
            "color": colour(s),
            "box": s["box"] if boxed else None,
            "box_label": f"{label(s)} {s['score']:.2f}" if boxed else None,
        }
        for s in segments
    ]
    if task == "instance":
        drawable = drawable[::-1]  # best on top
    return overlay(image, drawable, note=note, prompts=prompts, prompt_scale=prompt_scale)


def turbo(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) of the Turbo colour map (Mikhailov
    2019, Google's degree-5 polynomial approximation), dark blue through green to red."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)[..., None]
    coefficients = np.array(
        [
            [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
            [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
            [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
        ]
    )  # (3 channels, 6 powers)
    powers = x ** np.arange(6)  # (..., 6)
    return (np.clip(powers @ coefficients.T, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def draw_heatmap(
    image: np.ndarray, relevancy: np.ndarray, phrase: str, *, note: str | None = None
) -> Image.Image:
    """A relevancy heat map over the image: the photo dimmed to grey, and Turbo colours blended
    in where relevancy is above 0.5 (the phrase beats the canonical phrases), the more relevant
    the more opaque. The colours run from 0.5 (blue) to the image's peak (red), as LangSplat
    stretches each map to its own range, but never below 0.5: a map with no relevant pixel
    stays grey. The colour bar is labelled with that range; a caption names the phrase.

    Args:
        image: (H, W, 3) uint8; relevancy: (H, W) in [0, 1] at the same size
            (:meth:`ovseg.predictor.OVSegPredictor.heatmap`).
        note: a line under the caption (the model that made it).
    """
    if relevancy.shape != image.shape[:2]:
        raise ValueError(f"relevancy {relevancy.shape} and image {image.shape[:2]} differ in size")
    grey = image.astype(np.float32).mean(axis=2, keepdims=True) * 0.55 + 40
    peak = float(relevancy.max())
    top = max(peak, 0.5 + 1e-3)
    strength = np.clip((relevancy - 0.5) / (top - 0.5), 0, 1)[..., None]  # 0 at 0.5, 1 at peak
    alpha = np.where(strength > 0, 0.35 + 0.6 * strength, 0.0)
    colours = turbo(strength[..., 0]).astype(np.float32)
    picture = Image.fromarray((grey * (1 - alpha) + colours * alpha).clip(0, 255).astype(np.uint8))
    font_size = max(11, min(22, picture.width // 30))
    font, note_font = _font(font_size), _font(max(10, font_size - 2))
    found = f"peak relevancy {peak:.2f}" if peak > 0.5 else "no pixel above 0.5"
    caption = f"\u201c{phrase}\u201d  {found}"
    per_line = max(16, int(picture.width / (0.55 * font_size)))
    lines = [(line, font) for line in textwrap.wrap(caption, per_line)]
    if note:
        lines += [(line, note_font) for line in textwrap.wrap(note, int(per_line * 1.15))]
    bar = font_size + 4
    height = 8 + bar + 6 + sum(f.size + 4 for _, f in lines) + 6
    board = Image.new("RGB", (picture.width, picture.height + height), (255, 255, 255))
    board.paste(picture, (0, 0))
    draw = ImageDraw.Draw(board)
    # colour bar: relevancy 0.5 (left) to the peak (right)
    width = max(40, picture.width // 3)
    ramp = turbo(np.linspace(0, 1, width))[None].repeat(bar, axis=0)
    board.paste(Image.fromarray(ramp), (8, picture.height + 8))
    label = f"relevancy 0.5 \u2192 {top:.2f}"
    draw.text((8 + width + 6, picture.height + 8), label, fill=(0, 0, 0), font=note_font)
    y = picture.height + 8 + bar + 6
    for text, line_font in lines:
        colour = (0, 0, 0) if line_font is font else (90, 90, 90)
        draw.text((8, y), text, fill=colour, font=line_font)
        y += line_font.size + 4
    return board


def mask_overlay(rgb: np.ndarray, mask: np.ndarray, caption: str) -> np.ndarray:
    """An (H, W, 3) uint8 frame with the (H, W) bool ``mask`` tinted red and a ``caption``
    line under it: an (H + 14, W, 3) uint8 array."""
    tinted = rgb.astype(np.float32)
    tinted[mask] = 0.45 * tinted[mask] + 0.55 * np.array([255, 40, 40])
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + 14), "white")
    canvas.paste(Image.fromarray(tinted.round().astype(np.uint8)), (0, 0))
    ImageDraw.Draw(canvas).text((2, rgb.shape[0] + 1), caption, fill=(0, 0, 0))
    return np.asarray(canvas)
