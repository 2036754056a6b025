"""Posed images in the formats people have: COLMAP sparse models (text and binary),
nerfstudio / Blender (NeRF-synthetic) ``transforms.json`` and 3DGS's ``cameras.json``
(:mod:`ovseg.fields.inria_cameras`).

:func:`load_posed_images` takes a scene folder (or a file in it) and returns a
:class:`PosedImages`: one :class:`~ovseg.fields.camera.Camera` per view (OpenCV axes), its image
path, and the sparse points with colours when the format has them. Every problem (a missing
file, a camera id an image refers to but no camera has, an image whose size is not its
camera's, a NaN pose, a lens model with distortion) is a :class:`PosedImagesError` whose one
line names the file and what to do.

The formats live in :mod:`ovseg.fields.colmap`, :mod:`ovseg.fields.transforms` and
:mod:`ovseg.fields.inria_cameras`; the scene and its shared rules in :mod:`ovseg.fields.posed`.
"""

from __future__ import annotations

from pathlib import Path

from ovseg.fields.colmap import colmap_folder, colmap_images_dir, load_colmap, write_colmap
from ovseg.fields.inria_cameras import load_inria_cameras
from ovseg.fields.posed import (
    PosedImages,
    PosedImagesError,
    check_image_files,
    name_views_uniquely,
    view_file_stem,
)
from ovseg.fields.transforms import load_transforms, write_transforms

__all__ = [
    "PosedImages",
    "PosedImagesError",
    "load_colmap",
    "load_posed_images",
    "name_views_uniquely",
    "view_file_stem",
    "write_colmap",
    "write_transforms",
]


def load_posed_images(path: str | Path, *, check_images: bool = True) -> PosedImages:
    """Read a COLMAP model or a transforms.json scene (format detected from the files).

    ``path``: the scene folder, its ``sparse/0`` folder, a ``transforms*.json`` file, or
    3DGS's ``cameras.json`` (images in ``images/`` beside it).
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
        scene = load_inria_cameras(path, path.parent / "images")
    elif path.is_file():
        if path.suffix != ".json":
            raise PosedImagesError(f"{path}: expected a transforms.json file or a scene folder")
        scene = load_transforms([path])
    elif colmap_folder(path) is not None:
        model = colmap_folder(path)
        images_dir = colmap_images_dir(path, model)
        scene = load_colmap(model, images_dir)
    elif (path / "transforms.json").is_file():
        scene = load_transforms([path / "transforms.json"])
    elif sorted(path.glob("transforms_*.json")):
        scene = load_transforms(sorted(path.glob("transforms_*.json")))
    elif (path / "cameras.json").is_file():
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
        check_image_files(scene)
    return scene
