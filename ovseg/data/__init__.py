"""Real dataset formats: COCO-panoptic and semantic-PNG datasets, label PNGs, transforms.

Every dataset yields plain sample dicts; see ovseg.data.panoptic for the keys. The synthetic
shapes world is :mod:`ovseg.synthetic`, apart from the real formats it writes.
"""

from ovseg.data.errors import DatasetError
from ovseg.data.label_io import id_to_rgb, read_panoptic_png, read_semantic_png, rgb_to_id
from ovseg.data.panoptic import BUILTIN_PANOPTIC, PanopticDataset, builtin_panoptic
from ovseg.data.semantic import SemanticDataset
from ovseg.data.transforms import LargeScaleJitter, ResizeShortEdge

__all__ = [
    "BUILTIN_PANOPTIC",
    "DatasetError",
    "LargeScaleJitter",
    "PanopticDataset",
    "ResizeShortEdge",
    "SemanticDataset",
    "builtin_panoptic",
    "id_to_rgb",
    "read_panoptic_png",
    "read_semantic_png",
    "rgb_to_id",
]
