"""The scene every reader of posed images returns (:class:`PosedImages`), its error, and the
rules shared by the formats: unique view names and images that match their cameras."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ovseg.fields.camera import Camera


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


def check_image_files(scene: PosedImages) -> None:
    """PosedImagesError when an image is missing or not its camera's size."""
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
