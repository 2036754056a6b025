"""What the synthetic world's CLIP learns from, and how well it knows the world afterwards.

- :func:`crop_pairs`: object / texture crops with captions (an :class:`ImagePool`'s pairs);
- :func:`region_pairs`: scenes at the test scale with box-region captions (a
  :class:`RegionPool`);
- :func:`clip_zero_shot`: the frozen CLIP's zero-shot accuracy on val crops and regions.

Captions say an object's name, with its colour 30% of the time, in one of several phrasings
(:data:`CROP_CAPTIONS`), like the many phrasings of web captions (and the test prompts).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ovseg.data import PanopticDataset
from ovseg.synthetic.clip_training import RegionPool

CROP = 64  # side of the object / texture crops the CLIP learns from
# Caption forms of crops, like the many phrasings of web captions (and the test prompts).
CROP_CAPTIONS = (
    "a {}",
    "{}",
    "a photo of a {}.",
    "There is a {} in the scene",
    "a {} in the scene",
    "This is a photo of a {}",
)
TEXTURE_WINDOW = 40  # side of a texture crop's window, in scene pixels


def _square_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop a square around an (x, y, w, h) box with a margin, edge-padded, resized to CROP."""
    from PIL import Image

    x, y, w, h = box
    side = max(w, h) * 1.3 + 4
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    pad = s
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    crop = padded[y0 + pad : y0 + pad + s, x0 + pad : x0 + pad + s]
    return np.asarray(Image.fromarray(crop).resize((CROP, CROP), Image.BILINEAR))


def _world_json(json_path: Path) -> tuple[dict, dict]:
    """The world's panoptic JSON as (image id -> caption, (image id, segment id) -> the segment,
    with its ``bbox`` and, for things, its ``colour``)."""
    raw = json.loads(Path(json_path).read_text())
    captions = {im["id"]: im["caption"] for im in raw["images"]}
    segments = {(a["image_id"], s["id"]): s for a in raw["annotations"] for s in a["segments_info"]}
    return captions, segments


def _describe(rng: np.random.Generator, name: str, colour: str | None) -> tuple[str, str]:
    """(caption, words) of one object or texture: its name, with its colour 30% of the time,
    in one of the CROP_CAPTIONS phrasings."""
    words = f"{colour} {name}" if colour and rng.random() < 0.3 else name
    return CROP_CAPTIONS[int(rng.integers(len(CROP_CAPTIONS)))].format(words), words


def _texture_window(
    rng: np.random.Generator, mask: np.ndarray, tries: int = 12
) -> tuple[int, int, int, int] | None:
    """An (x, y, w, h) window of TEXTURE_WINDOW pixels lying (> 95%) inside the (H, W) bool
    ``mask``, the first of ``tries`` random ones that does; None if none does."""
    window = TEXTURE_WINDOW
    height, width = mask.shape
    for _ in range(tries):
        y = int(rng.integers(0, height - window + 1))
        x = int(rng.integers(0, width - window + 1))
        if mask[y : y + window, x : x + window].mean() > 0.95:
            return x, y, window, window
    return None


def crop_pairs(
    dataset: PanopticDataset, json_path: Path, rng: np.random.Generator
) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Object / texture crops of a split: (crops (N, CROP, CROP, 3) uint8, N captions, class
    indices (N,), the words each caption says: the object, with or without its colour).
    A thing's crop is a square around its box; a texture's is a window lying (almost) entirely
    inside it (a texture with no such window is left out)."""
    _, annotations = _world_json(json_path)
    names = dataset.vocabulary.names
    crops, crop_captions, crop_labels, crop_words = [], [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        for segment in sample["segments_info"]:
            if segment["isthing"]:
                annotation = annotations[(sample["image_id"], segment["id"])]
                box, colour = annotation["bbox"], annotation.get("colour")
            else:
                box, colour = _texture_window(rng, sample["panoptic"] == segment["id"]), None
                if box is None:
                    continue
            crops.append(_square_crop(sample["image"], box))
            caption, words = _describe(rng, names[segment["category_id"]], colour)
            crop_captions.append(caption)
            crop_labels.append(segment["category_id"])
            crop_words.append(words)
    return np.stack(crops), crop_captions, np.array(crop_labels), crop_words


class _Grid:
    """The stride-``stride`` cell grid of a scene resized from (height, width) to ``size_hw``."""

    def __init__(self, size_hw: tuple[int, int], height: int, width: int, stride: int) -> None:
        self.stride = stride
        self.shape = (-(-size_hw[0] // stride), -(-size_hw[1] // stride))
        self.scale_y, self.scale_x = size_hw[0] / height, size_hw[1] / width
        self.centres_y = (np.arange(self.shape[0]) + 0.5) * stride
        self.centres_x = (np.arange(self.shape[1]) + 0.5) * stride

    def box_cells(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """(grid_h, grid_w) bool: the cells whose centres lie in the (x, y, w, h) box of the
        original scene; for a box holding no centre, the cell holding the box's centre."""
        x, y, w, h = box
        sy, sx = self.scale_y, self.scale_x
        inside_y = (self.centres_y >= y * sy) & (self.centres_y < (y + h) * sy)
        inside_x = (self.centres_x >= x * sx) & (self.centres_x < (x + w) * sx)
        cells = inside_y[:, None] & inside_x[None, :]
        if not cells.any():  # a small box: the cell holding its centre
            cy = min(int((y + h / 2) * sy // self.stride), self.shape[0] - 1)
            cx = min(int((x + w / 2) * sx // self.stride), self.shape[1] - 1)
            cells[cy, cx] = True
        return cells

    def mask_cells(self, mask: np.ndarray) -> np.ndarray:
        """(grid_h, grid_w) bool: the cells lying (>= 90%) inside the (H, W) bool ``mask``."""
        height, width = mask.shape
        ys = np.minimum(
            (np.arange(height) * self.scale_y // self.stride).astype(int), self.shape[0] - 1
        )
        xs = np.minimum(
            (np.arange(width) * self.scale_x // self.stride).astype(int), self.shape[1] - 1
        )
        inside = np.zeros(self.shape)
        total = np.zeros(self.shape)
        np.add.at(inside, (ys[:, None], xs[None, :]), mask)
        np.add.at(total, (ys[:, None], xs[None, :]), 1)
        return inside >= 0.9 * total


def region_pairs(
    dataset: PanopticDataset,
    json_path: Path,
    size_hw: tuple[int, int],
    rng: np.random.Generator,
    stride: int = 32,
) -> tuple[RegionPool, list[list[int]]]:
    """Scenes resized to ``size_hw`` (H, W, the test scale) as a RegionPool, and the class index
    of each region, per scene. A thing's region is the cells of the stride-32 grid whose centres
    lie in its box; a stuff region is the cells lying (>= 90%) inside the texture. Captions say
    the object (with its colour 30% of the time) in one of several phrasings; the scene caption
    is kept too. Only boxes go in, never masks: the information of an object-centric crop."""
    from ovseg.preprocess import resize_image

    captions, annotations = _world_json(json_path)
    names = dataset.vocabulary.names
    scenes, scene_captions, regions, labels = [], [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        grid = _Grid(size_hw, *sample["panoptic"].shape, stride)
        scenes.append(resize_image(sample["image"], size_hw))
        scene_captions.append(captions[sample["image_id"]])
        scene_regions, scene_labels = [], []
        for segment in sample["segments_info"]:
            if segment["isthing"]:
                annotation = annotations[(sample["image_id"], segment["id"])]
                cells, colour = grid.box_cells(annotation["bbox"]), annotation.get("colour")
            else:
                cells, colour = grid.mask_cells(sample["panoptic"] == segment["id"]), None
                if not cells.any():
                    continue
            caption, words = _describe(rng, names[segment["category_id"]], colour)
            scene_regions.append((cells, caption, words))
            scene_labels.append(segment["category_id"])
        regions.append(scene_regions)
        labels.append(scene_labels)
    pool = RegionPool(torch.from_numpy(np.stack(scenes)), regions, scene_captions)
    return pool, labels


def clip_zero_shot(
    clip,
    backbone,
    val_set: PanopticDataset,
    val_json: Path,
    test_hw: tuple[int, int],
    novel: list[bool],
    rng: np.random.Generator,
    *,
    mean,
    std,
) -> dict:
    """The frozen CLIP's zero-shot accuracy (%) on val object / texture crops (image
    classification) and on val box regions of scenes at the test scale ``test_hw`` (dense
    features), overall, base, novel and per class, with the class names in the ViLD templates.
    ``novel``: per class index, is it held out of segmentation training. Keys: chance, crops
    (their number), all / base / novel / per_class (crops) and the same prefixed regions_."""
    from ovseg.modeling.text_classifier import TextEncoder
    from ovseg.synthetic.clip_training import region_zero_shot_accuracy, zero_shot_accuracy
    from ovseg.vocabulary import load_templates

    vocab = val_set.vocabulary
    embeddings = TextEncoder(backbone, load_templates("vild"), use_disk_cache=False)(
        vocab
    ).embeddings
    crops, _, crop_labels, _ = crop_pairs(val_set, val_json, rng)
    crops_right = zero_shot_accuracy(
        clip, torch.from_numpy(crops), crop_labels, embeddings, mean=mean, std=std
    )
    regions, region_labels = region_pairs(val_set, val_json, test_hw, rng)
    regions_right = region_zero_shot_accuracy(
        clip, regions, region_labels, embeddings, mean=mean, std=std
    )
    region_labels = np.array([label for labels in region_labels for label in labels])
    is_novel = np.asarray(novel)
    result = {"chance": 100 / len(vocab), "crops": int(len(crops_right))}
    for kind, right, labels in (
        ("", crops_right, crop_labels),
        ("regions_", regions_right, region_labels),
    ):
        result[f"{kind}all"] = 100 * right.mean()
        result[f"{kind}base"] = 100 * right[~is_novel[labels]].mean()
        result[f"{kind}novel"] = 100 * right[is_novel[labels]].mean()
        result[f"{kind}per_class"] = {
            vocab.names[c]: 100 * right[labels == c].mean() for c in np.unique(labels)
        }
    return result
