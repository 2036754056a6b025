"""Posed images in the formats people have: COLMAP sparse models (text and binary),
nerfstudio / Blender (NeRF-synthetic) ``transforms.json`` and 3DGS's ``cameras.json``
(:mod:`ovseg.fields.inria_cameras`).

:func:`load_posed_images` takes a scene folder (or a file in it) and returns a
:class:`PosedImages`: one :class:`~ovseg.fields.camera.Camera` per view (OpenCV axes), its image
path, and the sparse points with colours when the format has them. Every problem (a missing
file, a camera id an image refers to but no camera has, an image whose size is not its
camera's, a NaN pose, a lens model with distortion) is a :class:`PosedImagesError` whose one
line names the file and what to do.

COLMAP's layout (https://colmap.github.io/format.html): ``SCENE/images/`` and
``SCENE/sparse/0/{cameras,images,points3D}.{txt,bin}`` (or ``sparse/`` directly); poses are
world-to-camera with the quaternion (qw, qx, qy, qz); pixel centres at +0.5 like ovseg's.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.camera import Camera, camera_from_opengl, opengl_from_camera
from ovseg.fileio import atomic_write, write_text_atomic


class PosedImagesError(ValueError):
    """A scene's files are missing, malformed or inconsistent (the message says which)."""


@dataclass
class PosedImages:
    """Views of one scene.

    cameras: one per view; image_paths: the matching image files; points (M, 3) and
    colours (M, 3) in [0, 1]: the sparse reconstruction, or None; splits: view indices per
    split name ("train", "test", ...) when the format says, else everything is "train".
    times: for a dynamic scene (frames of multi-view video), each view's time (the
    transforms' per-frame "time", D-NeRF's key; any unit, >= 0), else None; camera_ids: each
    view's camera (the per-frame "camera_id"; frames of one camera are in time order), or None.
    """

    cameras: list[Camera]
    image_paths: list[Path]
    points: torch.Tensor | None = None
    colours: torch.Tensor | None = None
    splits: dict[str, list[int]] = field(default_factory=dict)
    times: list[float] | None = None
    camera_ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.cameras)

    def split(self, name: str) -> list[int]:
        """View indices of ``name``; KeyError naming the splits there are."""
        if not self.splits:
            return list(range(len(self))) if name == "train" else []
        if name not in self.splits:
            raise KeyError(f"no split '{name}' in this scene: it has {', '.join(self.splits)}")
        return self.splits[name]


def load_posed_images(path: str | Path, *, check_images: bool = True) -> PosedImages:
    """Read a COLMAP model or a transforms.json scene (format detected from the files).

    ``path``: the scene folder, its ``sparse/0`` folder, or a ``transforms*.json`` file.
    With ``check_images`` every image must exist and have its camera's size.
    Raises PosedImagesError.
    """
    path = Path(path)
    if not path.exists():
        raise PosedImagesError(
            f"{path}: no such file or folder; give a scene folder with "
            "sparse/0 (COLMAP) or transforms.json"
        )
    if path.is_file() and path.name == "cameras.json":  # 3DGS's, images beside it
        from ovseg.fields.inria_cameras import load_inria_cameras

        scene = load_inria_cameras(path, path.parent / "images")
    elif path.is_file():
        if path.suffix != ".json":
            raise PosedImagesError(f"{path}: expected a transforms.json file or a scene folder")
        scene = _load_transforms([path])
    elif _colmap_folder(path) is not None:
        model = _colmap_folder(path)
        images_dir = _colmap_images_dir(path, model)
        scene = load_colmap(model, images_dir)
    elif (path / "transforms.json").is_file():
        scene = _load_transforms([path / "transforms.json"])
    elif sorted(path.glob("transforms_*.json")):
        scene = _load_transforms(sorted(path.glob("transforms_*.json")))
    elif (path / "cameras.json").is_file():
        from ovseg.fields.inria_cameras import load_inria_cameras

        scene = load_inria_cameras(path / "cameras.json", path / "images")
    else:
        raise PosedImagesError(
            f"{path}: found neither a COLMAP model (sparse/0/cameras.txt or .bin), "
            "transforms.json nor 3DGS's cameras.json; run COLMAP (or ns-process-data) on the "
            "images first"
        )
    if not scene.cameras:
        raise PosedImagesError(f"{path}: the scene has no views")
    name_views_uniquely(scene, path)
    if check_images:
        _check_images(scene)
    return scene


def name_views_uniquely(scene: PosedImages, where: str | Path = "") -> None:
    """Views are named by their image's stem; where stems repeat (per-camera subfolders:
    ``cam0/000.png``, ``cam1/000.png``) every view is named by its image's path below the
    images' common folder, without the suffix (``cam0/000``). PosedImagesError when one image
    file is listed twice. Names are keys (feature caches, ``--view``) and, through
    :func:`view_file_stem`, file names."""
    stems = [Path(p).stem for p in scene.image_paths]
    if len(set(stems)) == len(stems):
        return
    paths = [Path(os.path.abspath(p)) for p in scene.image_paths]
    seen: dict[Path, int] = {}
    for index, image in enumerate(paths):
        if image in seen:
            raise PosedImagesError(
                f"{where}: views {seen[image]} and {index} are the same image {image.name} "
                "listed twice; drop one"
            )
        seen[image] = index
    root = Path(os.path.commonpath([p.parent for p in paths]))
    for camera, image in zip(scene.cameras, paths, strict=True):
        camera.name = image.relative_to(root).with_suffix("").as_posix()


def view_file_stem(name: str) -> str:
    """A view's name as a file name: ``cam0/000`` -> ``cam0__000``."""
    return name.replace("/", "__")


# ----------------------------------------------------------------------------------------
# COLMAP

# model id -> (name, number of parameters); https://colmap.github.io/cameras.html
COLMAP_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
}  # fmt: skip
_MODEL_IDS = {name: (model_id, count) for model_id, (name, count) in COLMAP_MODELS.items()}


def _colmap_folder(path: Path) -> Path | None:
    for candidate in (path, path / "sparse" / "0", path / "sparse"):
        if any((candidate / f"cameras.{ext}").is_file() for ext in ("txt", "bin")):
            return candidate
    return None


def _colmap_images_dir(scene: Path, model: Path) -> Path:
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
    for index, (camera, image_path) in enumerate(zip(scene.cameras, scene.image_paths,
                                                     strict=True)):  # fmt: skip
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


# ----------------------------------------------------------------------------------------
# nerfstudio / Blender transforms.json

_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def _load_transforms(files: list[Path]) -> PosedImages:
    views, paths, splits, times, camera_ids, files_of = [], [], {}, [], [], []
    points = colours = None
    for file in files:
        try:
            meta = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise PosedImagesError(
                f"{file}: not valid JSON ({error.msg}, line {error.lineno})"
            ) from None
        if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
            raise PosedImagesError(
                f"{file}: no 'frames' list; not a nerfstudio / Blender transforms file"
            )
        split = file.stem.removeprefix("transforms_") if file.stem != "transforms" else None
        _check_distortion(meta, file)
        for number, frame in enumerate(meta["frames"]):
            if "file_path" not in frame or "transform_matrix" not in frame:
                raise PosedImagesError(
                    f"{file}: frame {number} needs 'file_path' and 'transform_matrix'"
                )
            image_path = _frame_image(file.parent, frame["file_path"])
            intrinsics = _frame_intrinsics(meta, frame, image_path, file, number)
            try:
                camera = camera_from_opengl(
                    frame["transform_matrix"], name=image_path.stem, **intrinsics
                )
            except (ValueError, RuntimeError) as error:
                raise PosedImagesError(
                    f"{file}: frame {number} ('{frame['file_path']}'): {error}"
                ) from None
            index = len(views)
            views.append(camera)
            paths.append(image_path)
            times.append(_frame_time(frame, file, number))
            camera_ids.append(str(frame["camera_id"]) if "camera_id" in frame else None)
            files_of.append(file)
            frame_split = frame.get("split", split)
            if frame_split is not None:
                splits.setdefault(frame_split, []).append(index)
        if "ply_file_path" in meta and points is None:
            points, colours = _read_ply_points(file.parent / meta["ply_file_path"], file)
    timed = [t is not None for t in times]
    if not any(timed):
        return PosedImages(views, paths, points, colours, splits)
    if not all(timed):
        first = paths[timed.index(False)]
        raise PosedImagesError(
            f"{', '.join(str(f) for f in files)}: some frames have a 'time' and some do not "
            f"(first without: {first.name}); give every frame of a dynamic scene its time"
        )
    camera_ids = _default_camera_ids(camera_ids, paths)
    _check_time_order(times, camera_ids, paths, files_of)
    return PosedImages(views, paths, points, colours, splits, times, camera_ids)


def _default_camera_ids(camera_ids: list[str | None], paths: list[Path]) -> list[str]:
    """Frames without a "camera_id": with images in several folders (one per camera), the
    folder is the camera; in one folder, each image's stem (every frame its own camera)."""
    folders = {path.parent for path in paths}
    return [
        given if given is not None else (path.parent.name if len(folders) > 1 else path.stem)
        for given, path in zip(camera_ids, paths, strict=True)
    ]


def _frame_time(frame: dict, file: Path, number: int) -> float | None:
    if "time" not in frame:
        return None
    value = frame["time"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PosedImagesError(f"{file}: frame {number}'s time {value!r} is not a finite number")
    if value < 0:
        raise PosedImagesError(f"{file}: frame {number}'s time {value} is negative")
    return float(value)


def _check_time_order(times, camera_ids, paths, files) -> None:
    """In each file, the frames of each camera must come in increasing time (a video's
    order)."""
    last: dict[tuple[Path, str], tuple[float, Path]] = {}
    for time, camera_id, path, file in zip(times, camera_ids, paths, files, strict=True):
        key = (file, camera_id)
        if key in last and time <= last[key][0]:
            before_time, before = last[key]
            raise PosedImagesError(
                f"{file}: camera '{camera_id}': frame {path.name} (time {time:g}) comes after "
                f"{before.name} (time {before_time:g}); times out of order: list each "
                "camera's frames in increasing time"
            )
        last[key] = (time, path)


def _check_distortion(meta: dict, file: Path) -> None:
    """Refuse lens distortion and non-pinhole models, given at the top level or in a frame
    (nerfstudio allows both)."""
    frames = [f for f in meta.get("frames", []) if isinstance(f, dict)]
    for where, entry in [("the camera", meta)] + [(f"frame {n}", f) for n, f in enumerate(frames)]:
        coefficients = [entry.get(k, 0.0) for k in ("k1", "k2", "k3", "k4", "p1", "p2")]
        if any(coefficients):
            raise PosedImagesError(
                f"{file}: {where} has lens distortion (k1..p2); undistort the "
                "images first (ns-process-data does)"
            )
        model = entry.get("camera_model", "OPENCV")
        if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
            raise PosedImagesError(
                f"{file}: {where}: camera_model '{model}' is not a pinhole model; undistort the "
                "images first"
            )


def _frame_image(root: Path, file_path: str) -> Path:
    image = root / file_path
    if image.suffix.lower() not in (".png", ".jpg", ".jpeg") and not image.is_file():
        image = image.with_name(image.name + ".png")  # NeRF-synthetic omits the extension
    return image


def _frame_intrinsics(meta, frame, image_path, file, number) -> dict:
    values = {k: frame.get(k, meta.get(k)) for k in _INTRINSIC_KEYS}
    if values["w"] is None or values["h"] is None:
        if not image_path.is_file():
            raise PosedImagesError(
                f"{file}: frame {number} gives no w / h and its image {image_path} is missing"
            )
        from PIL import Image

        with Image.open(image_path) as image:
            values["w"], values["h"] = image.size
    width, height = int(values["w"]), int(values["h"])
    if values["fl_x"] is None:
        angle = frame.get("camera_angle_x", meta.get("camera_angle_x"))
        if angle is None:
            raise PosedImagesError(
                f"{file}: frame {number} has no focal length (fl_x or camera_angle_x)"
            )
        values["fl_x"] = 0.5 * width / math.tan(0.5 * float(angle))
    if values["fl_y"] is None:
        angle_y = frame.get("camera_angle_y", meta.get("camera_angle_y"))
        values["fl_y"] = (
            0.5 * height / math.tan(0.5 * float(angle_y)) if angle_y else values["fl_x"]
        )
    return {
        "fx": float(values["fl_x"]),
        "fy": float(values["fl_y"]),
        "cx": float(values["cx"]) if values["cx"] is not None else width / 2,
        "cy": float(values["cy"]) if values["cy"] is not None else height / 2,
        "width": width,
        "height": height,
    }


def _read_ply_points(path: Path, file: Path):
    if not path.is_file():
        raise PosedImagesError(f"{file}: ply_file_path {path} does not exist")
    import trimesh

    cloud = trimesh.load(str(path), file_type="ply", process=False)
    xyz = np.asarray(cloud.vertices, np.float32)
    colours = getattr(cloud, "colors", None)
    if colours is None or len(colours) != len(xyz):
        colours = cloud.visual.vertex_colors if hasattr(cloud, "visual") else None
    rgb = (
        np.asarray(colours, np.float32)[:, :3] / 255.0
        if colours is not None and len(colours) == len(xyz)
        else np.full_like(xyz, 0.5)
    )
    return torch.from_numpy(xyz), torch.from_numpy(rgb)


def write_transforms(
    scene: PosedImages,
    path: str | Path,
    *,
    indices: list[int] | None = None,
    extra: dict | None = None,
) -> None:
    """Write the views ``indices`` (default all) of ``scene`` as a nerfstudio transforms.json
    at ``path`` (per-frame intrinsics; image paths relative to the file's folder)."""
    path = Path(path)
    frames = []
    for index in indices if indices is not None else range(len(scene)):
        camera, image = scene.cameras[index], Path(scene.image_paths[index])
        frames.append({
            "file_path": Path(os.path.relpath(image.resolve(), path.parent.resolve())).as_posix(),
            "transform_matrix": opengl_from_camera(camera).tolist(),
            "fl_x": camera.fx, "fl_y": camera.fy, "cx": camera.cx, "cy": camera.cy,
            "w": camera.width, "h": camera.height,
        })  # fmt: skip
        if scene.times is not None:
            frames[-1]["time"] = scene.times[index]
            if scene.camera_ids is not None:
                frames[-1]["camera_id"] = scene.camera_ids[index]
    meta = {"camera_model": "OPENCV", "frames": frames, **(extra or {})}
    write_text_atomic(path, json.dumps(meta, indent=1))


def _check_images(scene: PosedImages) -> None:
    from PIL import Image

    for camera, image_path in zip(scene.cameras, scene.image_paths, strict=True):
        if not Path(image_path).is_file():
            raise PosedImagesError(
                f"view '{camera.name}': image {image_path} is missing; "
                "copy the images next to the poses or fix the paths"
            )
        with Image.open(image_path) as image:
            size = image.size
        if size != (camera.width, camera.height):
            raise PosedImagesError(
                f"view '{camera.name}': image {image_path} is {size[0]}x{size[1]} but its camera "
                f"says {camera.width}x{camera.height}; use the images the poses were made for"
            )
