"""The synthetic 3D world: the 2D world's things extruded into prisms on textured ground,
seen by orbiting pinhole cameras, so the language fields can be fitted and scored offline.

A scene is a height field over the ground square [-G, G]^2 (G = ``half_extent`` world units,
z up): a texture map (what the 2D world paints: stuff textures on the ground, each thing's
colour and class pattern on its top) and, per texel, a height (0 on the ground, the thing's
height on its footprint) and a segment index. Things do not overlap and stand inside the
central [-1, 1]^2. Views are ray-marched against the height field (exact depth order; a
prism's side walls wear its top's paint darkened like the 2D outlines), 2x2 supersampled for
the images, and give per-pixel segment indices as ground truth.

``write_scene3d`` writes::

    scene/images/view_000.png       RGB views (W x H, default 160 x 128 like the 2D world)
    scene/segments/view_000.png     uint8 segment index per pixel (scene.json's "segments")
    scene/transforms_train.json     nerfstudio / Blender transforms (OpenGL c2w, intrinsics)
    scene/transforms_test.json      the held-out views (azimuths between the training ones)
    scene/points3d.ply              surface points with colours (the Gaussians' init)
    scene/scene.json                segments (class, thing or stuff, colour, 3D box), vocabulary

Scene k depends only on (seed, k): the same arguments write the same bytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.camera import Camera, look_at
from ovseg.fields.posed_images import PosedImages, write_transforms
from ovseg.fileio import atomic_write, write_text_atomic
from ovseg.synthetic.render import MAX_ROTATION, SHAPES, draw_shape
from ovseg.synthetic.scenes import CATEGORIES, COLOURS, stuff_background, thing_paint

TEXELS_PER_UNIT = 64  # about one view pixel per texel at the default orbit, like the 2D world
SIDE_SHADE = 0.6  # a prism's walls: its paint darkened (the 2D world's outlines use 0.55)


class Scene3D:
    """One height-field scene.

    Attributes:
        texture: (T, T, 3) float32 in [0, 255], texel (row, col) covers world
            x in [-G + col / s, ...), y in [G - row / s, ...) (row 0 at +y), s = texels/unit.
        height: (T, T) float32 world units; segment: (T, T) uint8 index into ``segments``.
        segments: dicts {id, category, isthing, colour, height, box_min, box_max}.
    """

    def __init__(self, texture, height, segment, segments, half_extent):
        self.texture, self.height, self.segment = texture, height, segment
        self.segments, self.half_extent = segments, half_extent

    @property
    def texels(self) -> int:
        return self.texture.shape[0]

    def texel_of(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World (x, y) -> texel (row, col), clamped to the map."""
        col = ((x + self.half_extent) * TEXELS_PER_UNIT).floor().long().clamp(0, self.texels - 1)
        row = ((self.half_extent - y) * TEXELS_PER_UNIT).floor().long().clamp(0, self.texels - 1)
        return row, col


def make_scene3d(
    seed: int,
    index: int,
    *,
    half_extent: float = 2.0,
    max_things: int = 4,
    patterns: bool = True,
) -> Scene3D:
    """Scene ``index`` of ``seed``: 1-3 ground regions of stuff, 2-``max_things`` things."""
    rng = np.random.default_rng([seed, index, 3])
    side = int(round(2 * half_extent * TEXELS_PER_UNIT))
    size = (side, side)
    stuffs = [c for c in CATEGORIES if not c.isthing and c.name != "sky"]  # sky is no ground
    texture, regions, region_stuff = stuff_background(rng, size, stuffs)
    count = len(region_stuff)
    segment = regions.astype(np.uint8)
    height = np.zeros(size, np.float32)
    segments = [
        {"id": k, "category": c.name, "isthing": False, "colour": None}
        for k, c in enumerate(region_stuff)
    ]
    things = [c for c in CATEGORIES if c.isthing]
    occupied = np.zeros(size, bool)
    wanted = int(rng.integers(2, max_things + 1))
    for _ in range(40):  # rejection sampling of non-overlapping footprints
        if len(segments) - count == wanted:
            break
        category = things[int(rng.integers(len(things)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        radius = rng.uniform(0.24, 0.4) * TEXELS_PER_UNIT
        centre_world = rng.uniform(-0.85, 0.85, size=2)
        centre = (
            (centre_world[0] + half_extent) * TEXELS_PER_UNIT,
            (half_extent - centre_world[1]) * TEXELS_PER_UNIT,
        )
        max_angle = np.deg2rad(MAX_ROTATION.get(category.name, 180.0))
        mask = draw_shape(
            SHAPES[category.name], size, centre, radius, rng.uniform(-max_angle, max_angle)
        )
        grown = _dilate(mask, 3)
        if (grown & occupied).any() or mask.sum() < 40:
            continue
        paint = thing_paint(rng, category.name, colour, size, centre, patterns)
        thing_height = float(rng.uniform(0.08, 0.25))
        texture[mask] = paint[mask]
        height[mask] = thing_height
        segment[mask] = len(segments)
        occupied |= grown
        rows, cols = np.nonzero(mask)
        segments.append(
            {
                "id": len(segments),
                "category": category.name,
                "isthing": True,
                "colour": colour,
                "box_min": [
                    float(cols.min() / TEXELS_PER_UNIT - half_extent),
                    float(half_extent - (rows.max() + 1) / TEXELS_PER_UNIT),
                    0.0,
                ],
                "box_max": [
                    float((cols.max() + 1) / TEXELS_PER_UNIT - half_extent),
                    float(half_extent - rows.min() / TEXELS_PER_UNIT),
                    thing_height,
                ],
            }
        )
    return Scene3D(
        np.clip(texture, 0, 255).astype(np.float32), height, segment, segments, half_extent
    )


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    grown = mask.copy()
    for _ in range(steps):
        padded = np.pad(grown, 1)
        grown = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:] | grown
    return grown


def orbit_cameras(
    count: int,
    *,
    width: int = 160,
    height: int = 128,
    radius: float = 2.8,
    elevations: tuple[float, ...] = (68.0, 78.0),
    azimuth_offset: float = 0.0,
    fov_x_degrees: float = 50.0,
    prefix: str = "view",
    start: int = 0,
) -> list[Camera]:
    """``count`` cameras evenly around the z axis at ``radius`` from the origin, looking at
    it, elevations cycling through ``elevations`` (degrees above the ground)."""
    fx = 0.5 * width / math.tan(math.radians(fov_x_degrees) / 2)
    cameras = []
    for k in range(count):
        azimuth = math.radians(azimuth_offset + 360.0 * k / count)
        elevation = math.radians(elevations[k % len(elevations)])
        eye = (
            radius * math.cos(elevation) * math.cos(azimuth),
            radius * math.cos(elevation) * math.sin(azimuth),
            radius * math.sin(elevation),
        )
        cameras.append(
            Camera(
                look_at(eye, (0.0, 0.0, 0.0)),
                fx,
                fx,
                width / 2,
                height / 2,
                width,
                height,
                f"{prefix}_{start + k:03d}",
            )
        )
    return cameras


def scene_cameras(train_views: int, test_views: int, width: int, height: int) -> list[Camera]:
    """A scene's views: ``train_views`` orbiting at 68 / 78 degrees, then ``test_views``
    held out at azimuths halfway between them, at 73 degrees (named view_000, ...)."""
    train = orbit_cameras(train_views, width=width, height=height, prefix="view")
    test = orbit_cameras(
        test_views,
        width=width,
        height=height,
        elevations=(73.0,),
        azimuth_offset=180.0 / train_views,
        prefix="view",
        start=train_views,
    )
    return train + test


def render_view(
    scene: Scene3D, camera: Camera, *, supersample: int = 2, steps: int = 48
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-march ``scene`` in ``camera``: image (H, W, 3) uint8, segment (H, W) uint8 (at the
    pixel centres), depth (H, W) float32 camera z (at the pixel centres)."""
    h, w = camera.height, camera.width
    offsets = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample
    colours = torch.zeros(h, w, 3, dtype=torch.float64)
    for oy in offsets:
        for ox in offsets:
            colour, _, _ = _march(scene, camera, float(ox), float(oy), steps)
            colours += colour
    colours /= supersample**2
    _, segment, depth = _march(scene, camera, 0.5, 0.5, steps)
    image = colours.round().clamp(0, 255).to(torch.uint8).numpy()
    return image, segment.numpy().astype(np.uint8), depth.numpy().astype(np.float32)


def _march(scene: Scene3D, camera: Camera, ox: float, oy: float, steps: int):
    h, w = camera.height, camera.width
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) + oy,
        torch.arange(w, dtype=torch.float64) + ox,
        indexing="ij",
    )
    rotation = camera.rotation.double()
    directions_cam = torch.stack(
        [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, torch.ones_like(u)], dim=-1
    ).reshape(-1, 3)
    directions = directions_cam @ rotation  # camera -> world: R^T d
    origin = camera.centre.double()
    if bool((directions[:, 2] >= 0).any()):
        raise ValueError(f"camera '{camera.name}' sees above the horizon; lower its view")
    height = torch.from_numpy(scene.height).double()
    top = float(height.max()) + 1e-6
    t_ground = -origin[2] / directions[:, 2]
    t_top = (top - origin[2]) / directions[:, 2]
    fractions = torch.linspace(0, 1, steps, dtype=torch.float64)
    ts = t_top[:, None] + (t_ground - t_top)[:, None] * fractions[None, :]  # (R, S)
    points = origin + ts[..., None] * directions[:, None, :]
    rows, cols = scene.texel_of(points[..., 0], points[..., 1])
    inside = points[..., 2] <= height[rows, cols] + 1e-9
    inside[:, -1] = True  # the ground plane always stops the ray
    first = inside.float().argmax(dim=1)
    lo = ts.gather(1, (first - 1).clamp_min(0)[:, None])[:, 0]
    hi = ts.gather(1, first[:, None])[:, 0]
    for _ in range(12):  # bisection: the entry point into the height field
        mid = 0.5 * (lo + hi)
        point = origin + mid[:, None] * directions
        r, c = scene.texel_of(point[:, 0], point[:, 1])
        below = point[:, 2] <= height[r, c] + 1e-9
        hi = torch.where(below, mid, hi)
        lo = torch.where(below, lo, mid)
    hit = origin + hi[:, None] * directions
    r, c = scene.texel_of(hit[:, 0], hit[:, 1])
    texture = torch.from_numpy(scene.texture).double()
    colour = texture[r, c]
    on_wall = (height[r, c] - hit[:, 2]) > 0.01  # entered through a side, not the top
    colour = torch.where(on_wall[:, None], colour * SIDE_SHADE, colour)
    segment = torch.from_numpy(scene.segment.astype(np.int64))[r, c]
    depth = (hit - origin) @ rotation[2]
    return colour.reshape(h, w, 3), segment.reshape(h, w), depth.reshape(h, w)


def surface_points(scene: Scene3D, *, stride: int = 2, wall_levels: int = 3):
    """Points on the ground, the tops and the walls (every ``stride`` texels), with their
    colours in [0, 1]: (M, 3) float32, (M, 3) float32."""
    side = scene.texels
    rows, cols = np.mgrid[0:side:stride, 0:side:stride]
    rows, cols = rows.ravel(), cols.ravel()
    x = (cols + 0.5) / TEXELS_PER_UNIT - scene.half_extent
    y = scene.half_extent - (rows + 0.5) / TEXELS_PER_UNIT
    z = scene.height[rows, cols]
    points = [np.stack([x, y, z], 1)]
    colours = [scene.texture[rows, cols] / 255.0]
    raised = scene.height > 0
    edge = raised & ~erode(raised)
    er, ec = np.nonzero(edge)
    for level in range(wall_levels):
        fraction = (level + 0.5) / wall_levels
        ex = (ec + 0.5) / TEXELS_PER_UNIT - scene.half_extent
        ey = scene.half_extent - (er + 0.5) / TEXELS_PER_UNIT
        points.append(np.stack([ex, ey, scene.height[er, ec] * fraction], 1))
        colours.append(scene.texture[er, ec] / 255.0 * SIDE_SHADE)
    return (np.concatenate(points).astype(np.float32), np.concatenate(colours).astype(np.float32))


def erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def write_scene3d(
    out: str | Path,
    seed: int,
    index: int,
    *,
    train_views: int = 24,
    test_views: int = 6,
    width: int = 160,
    height: int = 128,
) -> Path:
    """Write scene ``index`` of ``seed`` (module doc layout) into ``out``; returns ``out``.
    Held-out views sit at azimuths halfway between training ones, at a third elevation."""
    out = Path(out)
    scene = make_scene3d(seed, index)
    cameras = scene_cameras(train_views, test_views, width, height)
    write_views(
        out,
        scene,
        cameras,
        train_views,
        lambda camera: render_view(scene, camera)[:2],
        meta={"seed": seed, "index": index},
        transforms_extra={"ply_file_path": "points3d.ply"},
    )
    points, colours = surface_points(scene)
    write_ply(out / "points3d.ply", points, colours)
    return out


def write_views(
    out: Path,
    scene: Scene3D,
    cameras: list[Camera],
    train_views: int,
    render,
    *,
    meta: dict,
    transforms_extra: dict | None = None,
    progress: bool = False,
) -> None:
    """Each camera's ``render(camera)`` -> (image, segment map) as images/NAME.png and
    segments/NAME.png, the first ``train_views`` in transforms_train.json (with
    ``transforms_extra``) and the rest in transforms_test.json, and scene.json (``meta``,
    the half extent, the segments and the classes)."""
    from PIL import Image
    from tqdm import tqdm

    paths = []
    for camera in tqdm(cameras, desc="views", disable=not progress):
        image, segment = render(camera)
        image_path = out / "images" / f"{camera.name}.png"
        atomic_write(image_path, lambda tmp, a=image: Image.fromarray(a).save(tmp, format="PNG"))
        atomic_write(
            out / "segments" / f"{camera.name}.png",
            lambda tmp, a=segment: Image.fromarray(a).save(tmp, format="PNG"),
        )
        paths.append(image_path)
    posed = PosedImages(cameras, paths)
    write_transforms(
        posed,
        out / "transforms_train.json",
        indices=list(range(train_views)),
        extra=transforms_extra,
    )
    write_transforms(
        posed, out / "transforms_test.json", indices=list(range(train_views, len(cameras)))
    )
    write_text_atomic(
        out / "scene.json",
        json.dumps(
            {
                **meta,
                "half_extent": scene.half_extent,
                "segments": scene.segments,
                "classes": sorted({s["category"] for s in scene.segments}),
            },
            indent=1,
        ),
    )


def write_ply(path: Path, points: np.ndarray, colours: np.ndarray) -> None:
    import trimesh

    rgba = np.concatenate(
        [np.round(colours * 255).clip(0, 255), np.full((len(points), 1), 255)], 1
    ).astype(np.uint8)
    data = trimesh.PointCloud(points, colors=rgba).export(file_type="ply")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
