"""COLMAP sparse models (https://colmap.github.io/format.html), text and binary, read and
written: ``SCENE/images/`` and ``SCENE/sparse/0/{cameras,images,points3D}.{txt,bin}`` (or
``sparse/`` directly); poses are world-to-camera with the quaternion (qw, qx, qy, qz); pixel
centres at +0.5 like ovseg's. Only undistorted pinhole models are read."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.camera import Camera
from ovseg.fields.posed import PosedImages, PosedImagesError
from ovseg.fileio import atomic_write, write_text_atomic

# model id -> (name, number of parameters); https://colmap.github.io/cameras.html
COLMAP_MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
_MODEL_IDS = {name: (model_id, count) for model_id, (name, count) in COLMAP_MODELS.items()}


def colmap_folder(path: Path) -> Path | None:
    for candidate in (path, path / "sparse" / "0", path / "sparse"):
        if any((candidate / f"cameras.{ext}").is_file() for ext in ("txt", "bin")):
            return candidate
    return None


def colmap_images_dir(scene: Path, model: Path) -> Path:
    for candidate in (scene / "images", model.parent / "images", model.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    return scene / "images"


def load_colmap(model: str | Path, images_dir: str | Path) -> PosedImages:
    """A COLMAP sparse model (``cameras``, ``images``, ``points3D`` as .txt or .bin; .bin
    first when both) with its images in ``images_dir``. Only undistorted models (PINHOLE,
    SIMPLE_PINHOLE, or a distortion model whose coefficients are all 0) are accepted."""
    model, images_dir = Path(model), Path(images_dir)
    binary = (model / "cameras.bin").is_file()
    ext = "bin" if binary else "txt"
    for name in ("cameras", "images"):
        if not (model / f"{name}.{ext}").is_file():
            raise PosedImagesError(
                f"{model}: {name}.{ext} is missing (a COLMAP model needs "
                f"cameras, images and points3D)"
            )
    if binary:
        cameras = _read_cameras_bin(model / "cameras.bin")
        images = _read_images_bin(model / "images.bin")
    else:
        cameras = _read_cameras_txt(model / "cameras.txt")
        images = _read_images_txt(model / "images.txt")
    points_file = model / f"points3D.{ext}"
    points = colours = None
    if points_file.is_file():
        xyz, rgb = (_read_points_bin if binary else _read_points_txt)(points_file)
        if len(xyz):
            points, colours = torch.from_numpy(xyz).float(), torch.from_numpy(rgb).float() / 255
    views, paths = [], []
    for image_id, qvec, tvec, camera_id, name in sorted(images, key=lambda im: im[4]):
        if camera_id not in cameras:
            raise PosedImagesError(
                f"{model}: image {image_id} ('{name}') refers to camera "
                f"{camera_id}, which cameras.{ext} does not have"
            )
        model_name, width, height, params = cameras[camera_id]
        fx, fy, cx, cy = _pinhole(model_name, params, f"{model}/cameras.{ext} camera {camera_id}")
        w2c = torch.eye(4, dtype=torch.float64)
        if not all(math.isfinite(v) for v in (*qvec, *tvec)):
            raise PosedImagesError(
                f"{model}: image '{name}' has a NaN or infinite pose; "
                "drop it or re-run the reconstruction"
            )
        from ovseg.fields.gaussians import quaternion_to_rotation

        w2c[:3, :3] = quaternion_to_rotation(torch.tensor([qvec], dtype=torch.float64))[0]
        w2c[:3, 3] = torch.tensor(tvec, dtype=torch.float64)
        views.append(_camera(w2c, fx, fy, cx, cy, width, height, Path(name).stem))
        paths.append(images_dir / name)
    return PosedImages(views, paths, points, colours, {})


def _pinhole(model_name: str, params, where: str) -> tuple[float, float, float, float]:
    if model_name == "SIMPLE_PINHOLE":
        f, cx, cy = params
        return f, f, cx, cy
    if model_name == "PINHOLE":
        return tuple(params)
    distortion = {"SIMPLE_RADIAL": 3, "RADIAL": 3, "OPENCV": 4, "FULL_OPENCV": 4}
    if model_name in distortion and not any(params[distortion[model_name] :]):
        if distortion[model_name] == 3:
            f, cx, cy = params[:3]
            return f, f, cx, cy
        return tuple(params[:4])
    raise PosedImagesError(
        f"{where}: lens model {model_name} with distortion; undistort first "
        "(colmap image_undistorter writes a PINHOLE model) and point ovseg at its output"
    )


def _camera(w2c, fx, fy, cx, cy, width, height, name) -> Camera:
    try:
        return Camera(
            w2c, float(fx), float(fy), float(cx), float(cy), int(width), int(height), name
        )
    except ValueError as error:
        raise PosedImagesError(str(error)) from None


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, whitespace-split words) of every line that is not a comment."""
    return [
        (number, raw.split())
        for number, raw in enumerate(path.read_text().splitlines(), 1)
        if not raw.startswith("#")
    ]


def _read_cameras_txt(path: Path) -> dict:
    cameras = {}
    for number, parts in _data_lines(path):
        if not parts:
            continue
        try:
            camera_id, model_name = int(parts[0]), parts[1]
            width, height = int(parts[2]), int(parts[3])
            params = [float(v) for v in parts[4:]]
        except (IndexError, ValueError):
            raise PosedImagesError(
                f"{path}: line {number} is not 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'"
            ) from None
        if model_name not in _MODEL_IDS or len(params) != _MODEL_IDS[model_name][1]:
            raise PosedImagesError(
                f"{path}: camera {camera_id} has model '{model_name}' with "
                f"{len(params)} parameters, which COLMAP does not define"
            )
        cameras[camera_id] = (model_name, width, height, params)
    return cameras


def _read_images_txt(path: Path) -> list:
    images = []
    lines = [parts for _, parts in _data_lines(path)]
    # two lines per image; the second (its 2D points) may be empty
    index = 0
    while index < len(lines):
        parts = lines[index]
        if not parts:
            index += 1
            continue
        try:
            image_id = int(parts[0])
            qvec = [float(v) for v in parts[1:5]]
            tvec = [float(v) for v in parts[5:8]]
            camera_id = int(parts[8])
            name = " ".join(parts[9:])
        except (IndexError, ValueError):
            raise PosedImagesError(
                f"{path}: an image line is not 'IMAGE_ID QW QX QY QZ TX TY TZ "
                f"CAMERA_ID NAME': {' '.join(parts)[:80]}"
            ) from None
        if not name:
            raise PosedImagesError(f"{path}: image {image_id} has no file name")
        images.append((image_id, qvec, tvec, camera_id, name))
        index += 2
    return images


def _read_points_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for _, parts in _data_lines(path):
        if not parts:
            continue
        try:
            xyz.append([float(v) for v in parts[1:4]])
            rgb.append([int(v) for v in parts[4:7]])
        except ValueError:
            raise PosedImagesError(
                f"{path}: a point line is not 'POINT3D_ID X Y Z R G B ERROR TRACK...'"
            ) from None
    return np.asarray(xyz, np.float64).reshape(-1, 3), np.asarray(rgb, np.float64).reshape(-1, 3)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path, self.data, self.offset = path, path.read_bytes(), 0

    def read(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise PosedImagesError(
                f"{self.path}: the file ends early (truncated or not a COLMAP binary model)"
            )
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def read_name(self) -> str:
        end = self.data.find(b"\x00", self.offset)
        if end < 0:
            raise PosedImagesError(f"{self.path}: an image name is not terminated")
        name = self.data[self.offset : end].decode("utf-8")
        self.offset = end + 1
        return name


def _read_cameras_bin(path: Path) -> dict:
    reader = _Reader(path)
    cameras = {}
    for _ in range(reader.read("Q")[0]):
        camera_id, model_id, width, height = reader.read("iiQQ")
        if model_id not in COLMAP_MODELS:
            raise PosedImagesError(f"{path}: camera {camera_id} has unknown model id {model_id}")
        model_name, count = COLMAP_MODELS[model_id]
        cameras[camera_id] = (model_name, width, height, list(reader.read("d" * count)))
    return cameras


def _read_images_bin(path: Path) -> list:
    reader = _Reader(path)
    images = []
    for _ in range(reader.read("Q")[0]):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = reader.read("idddddddi")
        name = reader.read_name()
        (num_points,) = reader.read("Q")
        reader.offset += num_points * struct.calcsize("<ddq")
        images.append((image_id, [qw, qx, qy, qz], [tx, ty, tz], camera_id, name))
    if reader.offset > len(reader.data):
        raise PosedImagesError(f"{path}: the file ends early (truncated?)")
    return images


def _read_points_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    reader = _Reader(path)
    count = reader.read("Q")[0]
    xyz, rgb = np.zeros((count, 3)), np.zeros((count, 3))
    for index in range(count):
        values = reader.read("QdddBBBd")
        xyz[index], rgb[index] = values[1:4], values[4:7]
        (track,) = reader.read("Q")
        reader.offset += track * struct.calcsize("<ii")
    return xyz, rgb


def write_colmap(scene: PosedImages, model: str | Path, *, binary: bool = False) -> None:
    """Write ``scene`` as a COLMAP model (PINHOLE cameras, one per view; points3D from
    ``scene.points`` with empty tracks) into the folder ``model``: what COLMAP, nerfstudio's
    ``ns-process-data`` output and 3DGS read. Image names are the paths' names."""
    model = Path(model)
    model.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (camera, image_path) in enumerate(
        zip(scene.cameras, scene.image_paths, strict=True)
    ):
        qvec = _rotation_to_quaternion(camera.rotation.double())
        rows.append(
            (index + 1, qvec, camera.translation.double().tolist(), camera, Path(image_path).name)
        )
    points = scene.points.double().numpy() if scene.points is not None else np.zeros((0, 3))
    colours = (
        (scene.colours.clamp(0, 1) * 255).round().numpy().astype(np.uint8)
        if scene.colours is not None
        else np.zeros((len(points), 3), np.uint8)
    )
    if binary:
        cams = struct.pack("<Q", len(rows))
        imgs = struct.pack("<Q", len(rows))
        for image_id, qvec, tvec, camera, name in rows:
            cams += struct.pack(
                "<iiQQdddd",
                image_id,
                1,
                camera.width,
                camera.height,
                camera.fx,
                camera.fy,
                camera.cx,
                camera.cy,
            )
            imgs += struct.pack("<idddddddi", image_id, *qvec, *tvec, image_id)
            imgs += name.encode("utf-8") + b"\x00" + struct.pack("<Q", 0)
        pts = struct.pack("<Q", len(points))
        for index, (xyz, rgb) in enumerate(zip(points, colours, strict=True)):
            pts += struct.pack("<QdddBBBdQ", index + 1, *xyz, *rgb, 0.0, 0)
        for name, data in (("cameras", cams), ("images", imgs), ("points3D", pts)):
            atomic_write(model / f"{name}.bin", lambda tmp, data=data: Path(tmp).write_bytes(data))
        return
    cams = ["# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]"]
    imgs = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    for image_id, qvec, tvec, camera, name in rows:
        cams.append(
            f"{image_id} PINHOLE {camera.width} {camera.height} {camera.fx!r} "
            f"{camera.fy!r} {camera.cx!r} {camera.cy!r}"
        )
        pose = " ".join(repr(float(v)) for v in (*qvec, *tvec))
        imgs.append(f"{image_id} {pose} {image_id} {name}")
        imgs.append("")
    pts = ["# POINT3D_ID X Y Z R G B ERROR TRACK[]"]
    for index, (xyz, rgb) in enumerate(zip(points, colours, strict=True)):
        coords = " ".join(repr(float(v)) for v in xyz)
        pts.append(f"{index + 1} {coords} {int(rgb[0])} {int(rgb[1])} {int(rgb[2])} 0")
    for name, lines in (("cameras", cams), ("images", imgs), ("points3D", pts)):
        write_text_atomic(model / f"{name}.txt", "\n".join(lines) + "\n")


def _rotation_to_quaternion(rotation: torch.Tensor) -> list[float]:
    """(3, 3) rotation -> (qw, qx, qy, qz) with qw >= 0 (Shepperd's method)."""
    m = rotation.tolist()
    trace = m[0][0] + m[1][1] + m[2][2]
    if trace > 0:
        s = math.sqrt(trace + 1.0) * 2
        q = [0.25 * s, (m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s]
    elif m[0][0] > m[1][1] and m[0][0] > m[2][2]:
        s = math.sqrt(1.0 + m[0][0] - m[1][1] - m[2][2]) * 2
        q = [(m[2][1] - m[1][2]) / s, 0.25 * s, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s]
    elif m[1][1] > m[2][2]:
        s = math.sqrt(1.0 + m[1][1] - m[0][0] - m[2][2]) * 2
        q = [(m[0][2] - m[2][0]) / s, (m[0][1] + m[1][0]) / s, 0.25 * s, (m[1][2] + m[2][1]) / s]
    else:
        s = math.sqrt(1.0 + m[2][2] - m[0][0] - m[1][1]) * 2
        q = [(m[1][0] - m[0][1]) / s, (m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, 0.25 * s]
    return [-v for v in q] if q[0] < 0 else q
