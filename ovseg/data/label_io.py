"""Reading and writing label maps as stored on disk: COCO-panoptic RGB-encoded segment ids
(id = R + 256 G + 256^2 B) and single-channel semantic class-index PNGs.

Label maps are read raw: no EXIF rotation and no colour conversion that would change a value,
unlike :func:`ovseg.preprocess.load_image`, which is for photographs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovseg.data.errors import DatasetError


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 segment ids, id = R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids in [0, 2^24) -> (H, W, 3) uint8, the inverse of rgb_to_id."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def _open_label(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"label file not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except UnidentifiedImageError as error:
        raise DatasetError(f"{path} is not an image file PIL can read") from error
    except (OSError, SyntaxError) as error:
        raise DatasetError(f"{path} is truncated or corrupt ({error})") from error
    return image


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """A COCO-panoptic PNG -> (H, W) int32 segment ids (0 = unlabeled)."""
    path = Path(path)
    image = _open_label(path)
    if image.mode not in ("RGB", "RGBA"):
        raise DatasetError(f"{path} is a {image.mode} image: panoptic PNGs must be RGB")
    return rgb_to_id(np.asarray(image.convert("RGB")))


def read_semantic_png(path: str | Path) -> np.ndarray:
    """A single-channel (8- or 16-bit, or palette) class-index image -> (H, W) int64."""
    path = Path(path)
    image = _open_label(path)
    if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise DatasetError(
            f"{path} is a {image.mode} image: semantic labels must be single-channel class indices"
        )
    return np.asarray(image).astype(np.int64)


def load_image_and_label(image_path: Path, label_path: Path, read_label, what: str):
    """The image (H, W, 3) and its label map (H, W) read by ``read_label``; DatasetError when
    either is unreadable or their sizes differ (``what`` names the label in the message)."""
    from ovseg.preprocess import ImageError, load_image

    try:
        image = load_image(image_path)
    except ImageError as error:
        raise DatasetError(str(error)) from error
    label = read_label(label_path)
    if label.shape != image.shape[:2]:
        raise DatasetError(
            f"size mismatch: image {image_path} is {image.shape[1]}x{image.shape[0]} but "
            f"{what} {label_path} is {label.shape[1]}x{label.shape[0]}"
        )
    return image, label
