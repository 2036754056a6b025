"""Ground-truth Gaussian splats of the synthetic 3D world, at the sizes of real captures.

A scene's surfaces (the ground with the prisms' tops, and the prisms' walls) are sampled
into flat Gaussians (discs 10x thinner along the surface normal) with the world's colours,
written in the 3DGS PLY layout (:mod:`ovseg.fields.splat_ply`), so the lifting can be
scored and timed at 50 k - 1 M Gaussians without fitting anything. Each Gaussian's segment is
known, so the lift can be checked Gaussian by Gaussian too.

Discs are spaced ``d = sqrt(area / count)`` apart with standard deviation 0.7 d and opacity
uniform in [0.6, 0.95], so a pixel blends about a dozen before it saturates, as in trained
splats (a few tens on real captures).

:func:`write_splat_world` writes a scene whose views are rendered from its splat (ray-marching
a megapixel view takes ~25 s, the splat ~1 s)::

    scene/splat.ply  scene/images/  scene/segments/  scene/transforms_{train,test}.json
    scene/scene.json  scene/gaussian_segments.npy (each Gaussian's segment index)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.gaussians import SH_COEFFICIENTS, GaussianCloud, covariance_3d, rgb_to_sh_dc
from ovseg.fields.splat_ply import Splat, write_splat
from ovseg.synthetic.world3d import (
    SIDE_SHADE,
    TEXELS_PER_UNIT,
    Scene3D,
    erode,
    make_scene3d,
    scene_cameras,
    write_views,
)


def scene_splat(
    scene: Scene3D, count: int, *, seed: int = 0, sh_degree: int = 3
) -> tuple[Splat, np.ndarray]:
    """``count`` (>= 100) Gaussians on the surfaces of ``scene`` (module doc): the splat
    (SH of ``sh_degree`` 0-3, higher bands zero) and each Gaussian's segment index (N,)."""
    if count < 100:
        raise ValueError(f"scene_splat: count must be >= 100, got {count}")
    rng = np.random.default_rng([seed, count])
    side, half = scene.texels, scene.half_extent
    raised = scene.height > 0
    edge = raised & ~erode(raised)
    er, ec = np.nonzero(edge)
    ground_area = (2 * half) ** 2
    wall_area = len(er) / TEXELS_PER_UNIT * float(scene.height[er, ec].mean() if len(er) else 0)
    n_wall = int(round(count * wall_area / (ground_area + wall_area))) if len(er) else 0
    n_ground = count - n_wall
    spacing = math.sqrt((ground_area + wall_area) / count)
    sigma = 0.7 * spacing
    # ground and tops: uniform over the square, at the height field's height
    xy = rng.uniform(-half, half, size=(n_ground, 2))
    col = np.clip(((xy[:, 0] + half) * TEXELS_PER_UNIT).astype(int), 0, side - 1)
    row = np.clip(((half - xy[:, 1]) * TEXELS_PER_UNIT).astype(int), 0, side - 1)
    means = [np.stack([xy[:, 0], xy[:, 1], scene.height[row, col]], 1)]
    colours = [scene.texture[row, col] / 255.0]
    segments = [scene.segment[row, col].astype(np.int64)]
    quaternions = [np.tile([1.0, 0.0, 0.0, 0.0], (n_ground, 1))]  # thin along z: the normal
    if n_wall:
        pick = rng.integers(0, len(er), n_wall)
        r, c = er[pick], ec[pick]
        normals = _outward_normals(raised, r, c)
        along = rng.uniform(-0.5, 0.5, n_wall) / TEXELS_PER_UNIT
        x = (c + 0.5) / TEXELS_PER_UNIT - half + normals[:, 0] * 0.5 / TEXELS_PER_UNIT
        y = half - (r + 0.5) / TEXELS_PER_UNIT + normals[:, 1] * 0.5 / TEXELS_PER_UNIT
        x, y = x - normals[:, 1] * along, y + normals[:, 0] * along
        z = scene.height[r, c] * rng.uniform(0, 1, n_wall)
        means.append(np.stack([x, y, z], 1))
        colours.append(scene.texture[r, c] / 255.0 * SIDE_SHADE)
        segments.append(scene.segment[r, c].astype(np.int64))
        # rotate z onto the horizontal normal: 90 degrees about z x n = (-n_y, n_x, 0)
        s = math.sin(math.pi / 4)
        quaternions.append(
            np.stack(
                [
                    np.full(n_wall, math.cos(math.pi / 4)),
                    -normals[:, 1] * s,
                    normals[:, 0] * s,
                    np.zeros(n_wall),
                ],
                1,
            )
        )
    means_t = torch.from_numpy(np.concatenate(means)).float()
    n = len(means_t)
    log_scales = torch.tensor([math.log(sigma), math.log(sigma), math.log(sigma * 0.1)])
    sh = torch.zeros(n, SH_COEFFICIENTS[sh_degree], 3)
    sh[:, :1] = rgb_to_sh_dc(torch.from_numpy(np.concatenate(colours)).float())
    opacity = torch.from_numpy(rng.uniform(0.6, 0.95, n)).float()
    cloud = GaussianCloud(
        means_t,
        log_scales.expand(n, 3),
        torch.from_numpy(np.concatenate(quaternions)).float(),
        torch.logit(opacity),
        sh,
    )
    return Splat(cloud.eval().requires_grad_(False)), np.concatenate(segments)


def _outward_normals(raised: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(K, 2) unit world (x, y) directions from edge texels towards their unraised neighbours."""
    padded = np.pad(raised, 1)
    r, c = rows + 1, cols + 1
    # world x grows with the column, world y with decreasing row
    nx = (~padded[r, c + 1]).astype(float) - (~padded[r, c - 1]).astype(float)
    ny = (~padded[r - 1, c]).astype(float) - (~padded[r + 1, c]).astype(float)
    norm = np.hypot(nx, ny)
    fallback = norm == 0  # a corner texel with opposite open sides: any horizontal direction
    nx, ny, norm = (
        np.where(fallback, 1.0, nx),
        np.where(fallback, 0.0, ny),
        np.where(fallback, 1.0, norm),
    )
    return np.stack([nx / norm, ny / norm], 1)


def render_splat_view(
    splat: Splat, gaussian_segments: np.ndarray, camera, segment_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """A view of the splat: image (H, W, 3) uint8 on a black background, and the segment
    (H, W) uint8 of the largest blending weight (255 where alpha < 0.5)."""
    from ovseg.fields.fast_raster import project_fast, render_fast

    cloud = splat.cloud
    projection = project_fast(cloud.means, covariance_3d(cloud.scales, cloud.quaternions), camera)
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(gaussian_segments), segment_count)
    features = torch.cat([cloud.colours(camera.centre), one_hot.float()], 1)
    out = render_fast(projection, cloud.opacities, features, camera.width, camera.height)
    rgb = (out["features"][..., :3].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    segment = out["features"][..., 3:].argmax(-1).to(torch.uint8).numpy()
    segment[out["alpha"].numpy() < 0.5] = 255
    return rgb, segment


def write_splat_world(
    out: str | Path,
    seed: int,
    index: int,
    *,
    gaussians: int,
    train_views: int = 150,
    test_views: int = 10,
    width: int = 640,
    height: int = 480,
    progress: bool = True,
) -> Path:
    """Scene ``index`` of ``seed`` as a ground-truth splat of ``gaussians`` Gaussians and
    views rendered from it (module doc layout); returns ``out``."""
    from ovseg.fileio import atomic_write

    out = Path(out)
    scene = make_scene3d(seed, index)
    splat, gaussian_segments = scene_splat(scene, gaussians, seed=seed)
    write_splat(out / "splat.ply", splat)

    def save_segments(tmp):
        with open(tmp, "wb") as file:
            np.save(file, gaussian_segments)

    atomic_write(out / "gaussian_segments.npy", save_segments)
    cameras = scene_cameras(train_views, test_views, width, height)
    count = len(scene.segments)
    write_views(
        out,
        scene,
        cameras,
        train_views,
        lambda camera: render_splat_view(splat, gaussian_segments, camera, count),
        meta={"seed": seed, "index": index, "gaussians": len(splat)},
        progress=progress,
    )
    return out
