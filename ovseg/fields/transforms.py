"""nerfstudio / Blender (NeRF-synthetic) ``transforms.json``, read and written: OpenGL
camera-to-world matrices, intrinsics at the top or per frame, splits from
``transforms_{train,test}.json`` or per-frame "split", and for dynamic scenes each frame's
"time" and "camera_id" (D-NeRF's keys)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.camera import camera_from_opengl, opengl_from_camera
from ovseg.fields.posed import PosedImages, PosedImagesError
from ovseg.fileio import write_text_atomic

_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def load_transforms(files: list[Path]) -> PosedImages:
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
        frames.append(
            {
                "file_path": Path(
                    os.path.relpath(image.resolve(), path.parent.resolve())
                ).as_posix(),
                "transform_matrix": opengl_from_camera(camera).tolist(),
                "fl_x": camera.fx,
                "fl_y": camera.fy,
                "cx": camera.cx,
                "cy": camera.cy,
                "w": camera.width,
                "h": camera.height,
            }
        )
        if scene.times is not None:
            frames[-1]["time"] = scene.times[index]
            if scene.camera_ids is not None:
                frames[-1]["camera_id"] = scene.camera_ids[index]
    meta = {"camera_model": "OPENCV", "frames": frames, **(extra or {})}
    write_text_atomic(path, json.dumps(meta, indent=1))
