"""Datasets (COCO-panoptic and semantic-PNG formats), transforms and the synthetic world.

Every dataset yields plain sample dicts; see ovseg.data.panoptic for the keys.
"""

from ovseg.data.errors import DatasetError
from ovseg.data.label_io import id_to_rgb, read_panoptic_png, read_semantic_png, rgb_to_id
from ovseg.data.panoptic import BUILTIN_PANOPTIC, PanopticDataset, builtin_panoptic
from ovseg.data.semantic import SemanticDataset
from ovseg.data.synthetic import CATEGORIES, base_novel_split, write_synthetic_panoptic
from ovseg.data.transforms import LargeScaleJitter, ResizeShortEdge

__all__ = [
    "BUILTIN_PANOPTIC",
    "CATEGORIES",
    "DatasetError",
    "LargeScaleJitter",
    "PanopticDataset",
    "ResizeShortEdge",
    "SemanticDataset",
    "base_novel_split",
    "builtin_panoptic",
    "id_to_rgb",
    "read_panoptic_png",
    "read_semantic_png",
    "rgb_to_id",
    "write_synthetic_panoptic",
]
