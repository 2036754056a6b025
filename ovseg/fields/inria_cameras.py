"""The ``cameras.json`` that graphdeco-inria's gaussian-splatting writes beside a trained
splat (its ``camera_to_JSON``): a list of views

    {"id": 0, "img_name": "DSC0001", "width": 1297, "height": 840,
     "position": [x, y, z],            the camera centre in world units
     "rotation": [[...], [...], [...]], camera-to-world rotation (OpenCV axes: rows of R^T)
     "fx": 1159.6, "fy": 1164.7}        focal lengths in pixels; principal point at the centre

The images are the ones the splat was trained on (``img_name`` without its extension), found
in an images folder; when they are larger or smaller than ``width`` x ``height`` by one
factor (a trainer run with ``-r 2``), the intrinsics are scaled to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ovseg.fields.camera import Camera
from ovseg.fields.posed import PosedImages, PosedImagesError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")
KEYS = ("img_name", "width", "height", "position", "rotation", "fx", "fy")


def load_inria_cameras(path: str | Path, images_dir: str | Path) -> PosedImages:
    """Read ``cameras.json`` at ``path`` with its images in ``images_dir``.

    Raises: PosedImagesError (one line naming the file) for a file that is not such a list,
    an entry without one of the keys, a pose that is not a rotation, or an image that is
    missing or not a multiple of its camera's size.
    """
    from PIL import Image

    path, images_dir = Path(path), Path(images_dir)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PosedImagesError(f"{path}: not readable as JSON ({error})") from None
    if not isinstance(entries, list) or not entries:
        raise PosedImagesError(
            f"{path}: expected a non-empty list of cameras (3DGS's cameras.json)"
        )
    cameras, paths = [], []
    for number, entry in enumerate(entries):
        missing = [key for key in KEYS if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise PosedImagesError(f"{path}: camera {number} lacks {', '.join(missing)}")
        name = Path(str(entry["img_name"]))
        image_path = _find_image(images_dir, name)
        if image_path is None:
            raise PosedImagesError(
                f"{path}: camera {number}'s image '{name}' is not in {images_dir}; give the "
                "images folder the splat was trained on"
            )
        rotation = torch.tensor(entry["rotation"], dtype=torch.float64).T  # world-to-camera
        position = torch.tensor(entry["position"], dtype=torch.float64)
        if rotation.shape != (3, 3) or position.shape != (3,):
            raise PosedImagesError(
                f"{path}: camera {number}: rotation must be 3x3 and position 3 numbers"
            )
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3] = rotation
        w2c[:3, 3] = -rotation @ position
        width, height = int(entry["width"]), int(entry["height"])
        fx, fy = float(entry["fx"]), float(entry["fy"])
        with Image.open(image_path) as image:
            actual = image.size
        sx, sy = actual[0] / width, actual[1] / height
        if abs(actual[1] - height * sx) > max(1.0, sx):
            raise PosedImagesError(
                f"{image_path}: {actual[0]}x{actual[1]} is not its camera's {width}x{height} "
                "at one scale; give the images the splat was trained on"
            )
        try:
            camera = Camera(
                w2c, fx * sx, fy * sy, actual[0] / 2, actual[1] / 2, actual[0], actual[1], name.stem
            )
        except ValueError as error:
            raise PosedImagesError(f"{path}: {error}") from None
        cameras.append(camera)
        paths.append(image_path)
    return PosedImages(cameras, paths)


def _find_image(folder: Path, name: Path) -> Path | None:
    if name.suffix and (folder / name).is_file():
        return folder / name
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def write_inria_cameras(path: str | Path, scene: PosedImages) -> None:
    """Write ``scene``'s cameras as 3DGS's cameras.json (principal points must be centred)."""
    from ovseg.fileio import write_text_atomic

    entries = []
    for number, camera in enumerate(scene.cameras):
        if abs(camera.cx - camera.width / 2) > 1e-3 or abs(camera.cy - camera.height / 2) > 1e-3:
            raise ValueError(
                f"camera '{camera.name}': cameras.json assumes a centred principal point"
            )
        rotation = camera.rotation.double()
        entries.append(
            {
                "id": number,
                "img_name": Path(scene.image_paths[number]).stem,
                "width": camera.width,
                "height": camera.height,
                "position": camera.centre.double().tolist(),
                "rotation": rotation.T.tolist(),
                "fy": camera.fy,
                "fx": camera.fx,
            }
        )
    write_text_atomic(path, json.dumps(entries, indent=1))
