"""COLMAP (text and binary) and nerfstudio / Blender transforms.json: written, read back,
and every broken scene refused in one line."""

import json
import math
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.fields.camera import Camera, look_at, opengl_from_camera
from ovseg.fields.posed_images import (
    PosedImages,
    PosedImagesError,
    load_posed_images,
    write_colmap,
    write_transforms,
)


def _scene(root, count=3, size=(24, 16)):
    images = root / "images"
    images.mkdir(parents=True)
    cameras, paths = [], []
    for index in range(count):
        angle = 2 * math.pi * index / count
        eye = (3 * math.cos(angle), 3 * math.sin(angle), 1.2)
        camera = Camera(
            look_at(eye, (0, 0, 0)),
            30.0 + index,
            29.0,
            size[0] / 2 + 0.25,
            size[1] / 2,
            size[0],
            size[1],
            f"view_{index:02d}",
        )
        path = images / f"view_{index:02d}.png"
        Image.fromarray(np.full((size[1], size[0], 3), 40 * index, np.uint8)).save(path)
        cameras.append(camera)
        paths.append(path)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.25, 1.0]])
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]])
    return PosedImages(cameras, paths, points, colours)


def _assert_same_views(read, written):
    assert [c.name for c in read.cameras] == [c.name for c in written.cameras]
    for a, b in zip(read.cameras, written.cameras, strict=True):
        torch.testing.assert_close(a.world_to_camera, b.world_to_camera, atol=1e-5, rtol=0)
        assert (a.fx, a.fy, a.cx, a.cy, a.width, a.height) == pytest.approx(
            (b.fx, b.fy, b.cx, b.cy, b.width, b.height)
        )
    assert [p.name for p in read.image_paths] == [p.name for p in written.image_paths]


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_round_trip(tmp_path, binary):
    scene = _scene(tmp_path)
    write_colmap(scene, tmp_path / "sparse" / "0", binary=binary)
    read = load_posed_images(tmp_path)
    _assert_same_views(read, scene)
    torch.testing.assert_close(read.points, scene.points)
    torch.testing.assert_close(read.colours, scene.colours, atol=1 / 255, rtol=0)


def test_colmap_text_written_by_hand(tmp_path):
    """The documented example layout: comments, a SIMPLE_PINHOLE camera, an identity pose,
    the 2D-points line, and a points3D track."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "a.jpg")
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text("# Camera list\n7 SIMPLE_PINHOLE 40 30 35.0 20.0 15.0\n")
    (model / "images.txt").write_text(
        "# Image list\n1 1 0 0 0 0.5 0 2 7 a.jpg\n10.0 12.0 -1 3.5 4.5 1\n"
    )
    (model / "points3D.txt").write_text("1 0.1 0.2 3.0 255 128 0 0.5 1 0\n")
    read = load_posed_images(tmp_path)
    camera = read.cameras[0]
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (35.0, 35.0, 20.0, 15.0)
    torch.testing.assert_close(camera.translation, torch.tensor([0.5, 0.0, 2.0]))
    torch.testing.assert_close(read.points, torch.tensor([[0.1, 0.2, 3.0]]))


def test_transforms_round_trip_and_splits(tmp_path):
    scene = _scene(tmp_path)
    write_transforms(scene, tmp_path / "transforms.json")
    read = load_posed_images(tmp_path)
    _assert_same_views(read, scene)
    assert read.split("train") == [0, 1, 2]
    write_transforms(scene, tmp_path / "split" / "transforms_train.json", indices=[0, 2])
    write_transforms(scene, tmp_path / "split" / "transforms_test.json", indices=[1])
    read = load_posed_images(tmp_path / "split")
    assert read.split("test") == [0] and read.split("train") == [1, 2]
    assert read.cameras[0].name == "view_01"
    with pytest.raises(KeyError, match="test, train"):
        read.split("val")


def test_blender_nerf_synthetic_layout(tmp_path):
    """NeRF-synthetic: camera_angle_x only, file paths without extension, size from the
    image, OpenGL camera-to-world."""
    (tmp_path / "train").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "r_0.png")
    c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4.0], [0, 0, 0, 1]]  # at z=4 looking down -z
    (tmp_path / "transforms_train.json").write_text(
        json.dumps(
            {
                "camera_angle_x": 2 * math.atan(0.5),
                "frames": [{"file_path": "./train/r_0", "transform_matrix": c2w}],
            }
        )
    )
    read = load_posed_images(tmp_path)
    camera = read.cameras[0]
    assert camera.fx == pytest.approx(20.0) and (camera.cx, camera.cy) == (10.0, 10.0)
    pixel, depth = camera.project(torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))
    assert depth.tolist() == pytest.approx([4.0, 4.0])
    # OpenGL y up: a point at +y lands above the centre (smaller v)
    assert pixel[1, 0] > 10.0 and pixel[1, 1] < 10.0


def _colmap_text_scene(tmp_path):
    scene = _scene(tmp_path, count=2)
    write_colmap(scene, tmp_path / "sparse" / "0")
    return tmp_path / "sparse" / "0"


def _replace_word(path, *, line: int, word: int, value: str) -> None:
    lines = path.read_text().splitlines()
    parts = lines[line].split()
    parts[word] = value
    lines[line] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing_image", "is missing"),
        ("wrong_size", "is 10x10 but its camera says 24x16"),
        ("unknown_camera", "refers to camera 9"),
        ("nan_pose", "NaN"),
        ("distortion", "undistort first"),
        ("no_images_file", "images.txt is missing"),
        ("garbage_camera_line", "line 4 is not"),
    ],
)
def test_broken_colmap_scenes_are_refused_in_one_line(tmp_path, breakage, message):
    model = _colmap_text_scene(tmp_path)
    images_txt = model / "images.txt"
    cameras_txt = model / "cameras.txt"
    if breakage == "missing_image":
        (tmp_path / "images" / "view_01.png").unlink()
    elif breakage == "wrong_size":
        Image.new("RGB", (10, 10)).save(tmp_path / "images" / "view_01.png")
    elif breakage == "unknown_camera":
        _replace_word(images_txt, line=2, word=8, value="9")
    elif breakage == "nan_pose":
        _replace_word(images_txt, line=2, word=5, value="nan")
    elif breakage == "distortion":
        cameras_txt.write_text("1 OPENCV 24 16 30 29 12 8 0.1 0 0 0\n2 PINHOLE 24 16 30 29 12 8\n")
    elif breakage == "no_images_file":
        images_txt.unlink()
    elif breakage == "garbage_camera_line":
        cameras_txt.write_text(cameras_txt.read_text() + "3 PINHOLE twenty\n")
    with pytest.raises(PosedImagesError, match=message) as caught:
        load_posed_images(tmp_path)
    assert "\n" not in str(caught.value)


def test_truncated_binary_model_is_refused(tmp_path):
    scene = _scene(tmp_path, count=2)
    write_colmap(scene, tmp_path / "sparse" / "0", binary=True)
    images_bin = tmp_path / "sparse" / "0" / "images.bin"
    images_bin.write_bytes(images_bin.read_bytes()[:40])
    with pytest.raises(PosedImagesError, match="ends early"):
        load_posed_images(tmp_path)
    (tmp_path / "sparse" / "0" / "cameras.bin").write_bytes(
        struct.pack("<Q", 1) + b"\x00" * 8 + struct.pack("<QQ", 1, 1)
    )
    with pytest.raises(PosedImagesError):
        load_posed_images(tmp_path)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"frames": [{"file_path": "images/view_00.png"}]}, "needs 'file_path' and"),
        ({"k1": 0.2, "frames": []}, "distortion"),
        ({"nope": 1}, "no 'frames' list"),
        (
            {
                "frames": [
                    {
                        "file_path": "images/view_00.png",
                        "w": 24,
                        "h": 16,
                        "transform_matrix": np.eye(4).tolist(),
                    }
                ]
            },
            "no focal length",
        ),
        (
            {
                "fl_x": 30,
                "w": 24,
                "h": 16,
                "frames": [
                    {
                        "file_path": "images/view_00.png",
                        "transform_matrix": [[float("nan")] * 4] * 4,
                    }
                ],
            },
            "NaN",
        ),
    ],
)
def test_broken_transforms_are_refused_in_one_line(tmp_path, meta, message):
    _scene(tmp_path, count=1)
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(PosedImagesError, match=message) as caught:
        load_posed_images(tmp_path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("extra", [{"k1": 0.2}, {"p2": 0.01}, {"camera_model": "OPENCV_FISHEYE"}])
def test_distortion_given_per_frame_is_refused_like_the_top_level(tmp_path, extra):
    _scene(tmp_path, count=1)
    frame = {"file_path": "images/view_00.png", "transform_matrix": np.eye(4).tolist()}
    meta = {"fl_x": 30, "w": 24, "h": 16, "frames": [{**frame, **extra}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(PosedImagesError, match="frame 0.*undistort the images first") as caught:
        load_posed_images(tmp_path)
    assert "\n" not in str(caught.value)


def test_a_folder_with_no_poses_says_what_to_run(tmp_path):
    with pytest.raises(PosedImagesError, match="run COLMAP"):
        load_posed_images(tmp_path)
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(PosedImagesError, match="not valid JSON"):
        load_posed_images(tmp_path)


def _timed(tmp_path, times, camera_ids=None):
    scene = _scene(tmp_path, count=len(times))
    scene.times = list(times)
    scene.camera_ids = camera_ids or ["cam"] * len(times)
    return scene


def test_frame_times_and_cameras_round_trip(tmp_path):
    scene = _timed(tmp_path, [0.0, 0.5, 1.25], ["a", "a", "b"])
    write_transforms(scene, tmp_path / "transforms.json")
    read = load_posed_images(tmp_path)
    assert read.times == [0.0, 0.5, 1.25]
    assert read.camera_ids == ["a", "a", "b"]
    _assert_same_views(read, scene)


def test_a_static_scene_has_no_times(tmp_path):
    write_transforms(_scene(tmp_path), tmp_path / "transforms.json")
    read = load_posed_images(tmp_path)
    assert read.times is None and read.camera_ids is None


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda frames: frames[1].pop("time"), "some frames have a 'time' and some do not"),
        (lambda frames: frames[2].update(time=0.25), "times out of order"),
        (lambda frames: frames[0].update(time=-1.0), "negative"),
        (lambda frames: frames[0].update(time="noon"), "not a finite number"),
    ],
)
def test_broken_frame_times_are_refused_in_one_line(tmp_path, edit, message):
    write_transforms(_timed(tmp_path, [0.0, 0.5, 1.0]), tmp_path / "transforms.json")
    meta = json.loads((tmp_path / "transforms.json").read_text())
    edit(meta["frames"])
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(PosedImagesError, match=message) as error:
        load_posed_images(tmp_path)
    assert "\n" not in str(error.value)


def test_each_camera_has_its_own_time_order(tmp_path):
    # two cameras interleaved: times go back between cameras, never within one
    write_transforms(
        _timed(tmp_path, [0.0, 0.0, 1.0], ["a", "b", "a"]), tmp_path / "transforms.json"
    )
    assert load_posed_images(tmp_path).times == [0.0, 0.0, 1.0]


def _per_camera_folders(tmp_path, times=None):
    """Four views in cam0/ and cam1/ with the same file names (000.png, 001.png)."""
    scene = _scene(tmp_path, count=4)
    frames = []
    for index, camera in enumerate(scene.cameras):
        relative = f"cam{index // 2}/{index % 2:03d}.png"
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        scene.image_paths[index].rename(tmp_path / relative)
        frame = {
            "file_path": relative,
            "transform_matrix": opengl_from_camera(camera).tolist(),
            "fl_x": camera.fx,
            "fl_y": camera.fy,
            "cx": camera.cx,
            "cy": camera.cy,
            "w": camera.width,
            "h": camera.height,
        }
        if times is not None:
            frame["time"] = times[index]
        frames.append(frame)
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": frames}))


def test_views_with_one_file_name_in_per_camera_folders_get_unique_names(tmp_path):
    _per_camera_folders(tmp_path)
    read = load_posed_images(tmp_path)
    assert [c.name for c in read.cameras] == ["cam0/000", "cam0/001", "cam1/000", "cam1/001"]
    from ovseg.fields.posed_images import view_file_stem

    assert len({view_file_stem(c.name) for c in read.cameras}) == 4
    assert view_file_stem("cam1/000") == "cam1__000"


def test_per_camera_folders_of_a_video_are_each_cameras_own_time_order(tmp_path):
    # cam0/000 and cam1/000 are both at t = 0: no camera goes back in time
    _per_camera_folders(tmp_path, times=[0.0, 0.5, 0.0, 0.5])
    read = load_posed_images(tmp_path)
    assert read.camera_ids == ["cam0", "cam0", "cam1", "cam1"]


def test_one_image_listed_twice_is_refused(tmp_path):
    scene = _scene(tmp_path, count=2)
    write_transforms(scene, tmp_path / "transforms.json")
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["frames"].append(dict(meta["frames"][0]))
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(PosedImagesError, match="views 0 and 2 are the same image view_00.png"):
        load_posed_images(tmp_path)
