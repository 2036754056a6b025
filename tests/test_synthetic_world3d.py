"""The synthetic 3D world: deterministic scenes whose views, segment maps, poses and 3D
boxes agree with each other."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.fields.posed_images import load_posed_images
from ovseg.synthetic.world3d import make_scene3d, orbit_cameras, render_view, write_scene3d


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world3d") / "scene"
    return write_scene3d(out, seed=0, index=1, train_views=4, test_views=2, width=64, height=48)


def test_the_scene_folder_loads_with_its_splits_points_and_labels(scene_dir):
    scene = load_posed_images(scene_dir)
    assert len(scene.split("train")) == 4 and len(scene.split("test")) == 2
    assert scene.points is not None and scene.points.shape[1] == 3
    assert float(scene.colours.min()) >= 0 and float(scene.colours.max()) <= 1
    meta = json.loads((scene_dir / "scene.json").read_text())
    things = [s for s in meta["segments"] if s["isthing"]]
    assert len(things) >= 2 and all(s["box_max"][2] > 0 for s in things)
    for camera in scene.cameras:
        segments = np.asarray(Image.open(scene_dir / "segments" / f"{camera.name}.png"))
        assert segments.shape == (48, 64) and segments.max() < len(meta["segments"])


def test_same_seed_same_bytes(scene_dir, tmp_path):
    again = write_scene3d(
        tmp_path / "again", seed=0, index=1, train_views=4, test_views=2, width=64, height=48
    )
    for name in ("images/view_000.png", "segments/view_005.png", "scene.json", "points3d.ply"):
        assert (again / name).read_bytes() == (scene_dir / name).read_bytes(), name


def test_a_things_top_projects_onto_its_own_segment():
    scene = make_scene3d(0, 2)
    cameras = orbit_cameras(6, width=96, height=80)
    things = [s for s in scene.segments if s["isthing"]]
    hits = 0
    for thing in things:
        # a texel inside the footprint, lifted to the thing's top
        rows, cols = np.nonzero(scene.segment == thing["id"])
        pick = len(rows) // 2
        x = (cols[pick] + 0.5) / 64 - scene.half_extent
        y = scene.half_extent - (rows[pick] + 0.5) / 64
        top = torch.tensor([[x, y, float(scene.height[rows[pick], cols[pick]])]])
        for camera in cameras:
            _, segment, depth = render_view(scene, camera, supersample=1)
            pixel, z = camera.project(top.float())
            u, v = int(pixel[0, 0]), int(pixel[0, 1])
            if 0 <= u < 96 and 0 <= v < 80 and segment[v, u] == thing["id"]:
                hits += 1
                assert depth[v, u] == pytest.approx(float(z[0]), abs=0.05)
    # tops can hide behind a taller neighbour in a few views, never in most
    assert hits >= 0.8 * len(things) * len(cameras)


def test_taller_things_hide_the_ground_behind_them():
    scene = make_scene3d(0, 2)
    camera = orbit_cameras(1, width=96, height=80, elevations=(30.0,))[0]
    image, segment, depth = render_view(scene, camera, supersample=1)
    flat = make_scene3d(0, 2)
    flat.height[:] = 0  # the same texture with every thing pressed flat
    _, flat_segment, flat_depth = render_view(flat, camera, supersample=1)
    raised = segment != flat_segment
    assert raised.any(), "at a low elevation the walls must cover some ground"
    assert (depth[raised] < flat_depth[raised]).all()
