"""Image loading and the official test-time preprocessing: resize the short side (PIL bilinear
on uint8), normalise on the 0..255 scale, zero-pad to a multiple of 32."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Refuse absurd files before decoding them: PIL's own decompression-bomb limit (~179 MP).
MAX_IMAGE_PIXELS = 2 * 89_478_485


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


@contextlib.contextmanager
def _opened_image(path: str | Path):
    """The PIL image of a file, its header read and its size checked against the pixel limit;
    PIL's errors (inside the ``with`` block too) become ImageError saying what is wrong."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            # Large but allowed images: the size check below is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image_file = Image.open(path)
        with image_file as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageError(
                    f"{path} is {image.width}x{image.height} pixels, above the "
                    f"{MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit: downscale it first"
                )
            yield image
    except Image.DecompressionBombError as error:
        raise ImageError(f"{path} is too large to decode safely: downscale it first") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{path} is not an image file PIL can read") from error
    except (OSError, SyntaxError) as error:
        raise ImageError(f"{path} is truncated or corrupt ({error})") from error


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array.

    The first frame of an animated image (:func:`image_frame_count` says how many there are).
    EXIF orientation is applied; grayscale, palette, CMYK, RGBA (alpha dropped) and 16-bit
    images are converted (16-bit values on the 0..65535 scale, as uint16 arrays:
    :func:`as_rgb_array`). Missing, non-image, truncated and empty files raise ImageError.
    """
    from PIL import ImageOps

    with _opened_image(path) as image:
        image.load()
        return to_rgb_uint8(ImageOps.exif_transpose(image))


# EXIF orientations that turn the picture a quarter (transposed, 90, transverse, 270): the
# picture a viewer shows, and :func:`load_image` returns, has width and height swapped.
_QUARTER_TURNS = (5, 6, 7, 8)


def probe_image(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file as :func:`load_image` returns it (and a viewer shows it: EXIF
    orientation applied), from its header, without decoding the pixels. Raises ImageError for
    what :func:`load_image` refuses up front: missing, empty, not an image, too large."""
    with _opened_image(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112) in _QUARTER_TURNS:  # 0x0112: the Orientation tag
            width, height = height, width
    if width * height == 0:
        raise ImageError(f"{path} has 0 pixels")
    return height, width


def check_image(path: str | Path) -> tuple[int, int]:
    """(H, W) as :func:`probe_image`, after decoding the pixels once: ImageError for all that
    :func:`load_image` refuses, a truncated or corrupt file included (its header alone reads
    fine), so a command can refuse it before it loads a model."""
    with _opened_image(path) as image:
        image.load()
    return probe_image(path)


# How pixel values of each depth reach the model: one rule for files and arrays. The type,
# never the content, sets the scale: 16-bit integers are 0..65535 (v / 257, rounded), floats
# 0..1, 8-bit 0..255; values outside are clipped. A 16-bit file that holds 8-bit values
# (all <= 255) is therefore nearly black: save it as 8-bit to have it read as such.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def sixteen_bit_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit integer values (any shape, 0..65535) -> uint8: v / 257 rounded, clipped."""
    return np.clip(np.asarray(array, dtype=np.float64) / 257.0 + 0.5, 0, 255).astype(np.uint8)


def unit_float_to_uint8(array: np.ndarray) -> np.ndarray:
    """Float values (any shape, 0..1) -> uint8: v x 255 rounded, clipped."""
    return np.clip(np.asarray(array, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def image_frame_count(path: str | Path) -> int:
    """How many frames an image file holds (an animated GIF / PNG / WebP: more than 1; only
    the first is read by :func:`load_image`). ImageError as :func:`probe_image`."""
    with _opened_image(path) as image:
        return int(getattr(image, "n_frames", 1))


def to_rgb_uint8(image) -> np.ndarray:
    """A PIL image of any mode -> (H, W, 3) uint8 RGB. 16-bit (I;16*, I) and float (F)
    grayscale follow the one rule above (as arrays do in :func:`as_rgb_array`)."""
    if image.width == 0 or image.height == 0:
        raise ImageError("the image has 0 pixels")
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        array = np.asarray(image)
        gray = sixteen_bit_to_uint8(array) if image.mode != "F" else unit_float_to_uint8(array)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def as_rgb_array(image) -> np.ndarray:
    """A path, PIL image or array (H, W), (H, W, 3|4) uint8 / uint16 / float -> (H, W, 3) uint8
    RGB. Files and arrays follow one rule (see ``SIXTEEN_BIT_MODES``): uint16 is 0..65535
    (v / 257), float 0..1, whatever the values; the same 16-bit pixels as a PNG path and as a
    uint16 array reach the model alike. ImageError for other shapes, dtypes, 0 pixels."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if not isinstance(image, np.ndarray):
        return to_rgb_uint8(image)
    array = image
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected an (H, W, 3) image array, got shape {image.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError("the image has 0 pixels")
    if array.dtype == np.uint16:
        array = sixteen_bit_to_uint8(array)
    elif np.issubdtype(array.dtype, np.floating):
        array = unit_float_to_uint8(array)
    elif array.dtype != np.uint8:
        raise ImageError(f"unsupported image dtype {array.dtype}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2 ResizeShortestEdge output (h, w): short side -> ``short``, long side capped.

    A side never rounds to 0: an extreme aspect ratio (1x5000) keeps at least 1 pixel, where
    detectron2 would produce an empty image.
    """
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of an (H, W, 3) uint8 array to ``size_hw``."""
    from PIL import Image

    if tuple(image.shape[:2]) == tuple(size_hw):
        return image
    resized = Image.fromarray(image).resize((size_hw[1], size_hw[0]), Image.BILINEAR)
    return np.asarray(resized)


def padded_size(height: int, width: int, size_divisibility: int = 32) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``size_divisibility`` (the network input)."""
    if size_divisibility <= 1:
        return height, width
    return (
        -(-height // size_divisibility) * size_divisibility,
        -(-width // size_divisibility) * size_divisibility,
    )


def normalize_and_pad(
    images: list[np.ndarray],
    mean,
    std,
    size_divisibility: int = 32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> (B, 3, Hp, Wp) float32: (x - mean) / std, then zero padding at
    the bottom/right to a common size divisible by ``size_divisibility``."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    tensors = [
        (
            torch.from_numpy(np.array(im, dtype=np.uint8)).to(device).permute(2, 0, 1).float()
            - mean_t
        )
        / std_t
        for im in images
    ]
    height, width = padded_size(
        max(t.shape[1] for t in tensors), max(t.shape[2] for t in tensors), size_divisibility
    )
    return torch.stack([F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1])) for t in tensors])
