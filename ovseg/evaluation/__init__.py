"""Evaluation: panoptic quality (PQ), semantic mIoU, and mask / box AP (pycocotools)."""

from ovseg.evaluation.instance import InstanceEvaluator
from ovseg.evaluation.panoptic import PanopticEvaluator, write_coco_panoptic
from ovseg.evaluation.semantic import SemanticEvaluator

__all__ = ["InstanceEvaluator", "PanopticEvaluator", "SemanticEvaluator", "write_coco_panoptic"]
