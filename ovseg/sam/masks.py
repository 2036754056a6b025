"""SAM as a mask source: automatic masks for a whole image, and masks for point / box prompts.

Wraps segment-anything's ``SamAutomaticMaskGenerator`` and ``SamPredictor`` (their resize,
normalisation and post-processing unchanged). Masks come back at the image's size, with SAM's
predicted IoU as their quality; labelling them is :mod:`ovseg.sam.labels`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ovseg.sam.prompts import PromptObject, Prompts, network_points


@dataclass
class MaskSet:
    """masks (N, H, W) bool at the image size; scores (N,) float in [0, 1] (SAM's predicted
    IoU); sources: per mask what produced it (a prompt's description, or "automatic")."""

    masks: np.ndarray
    scores: np.ndarray
    sources: list[str]


class SamMasks:
    """Automatic and prompted SAM masks for one ``segment_anything.modeling.Sam``.

    The image embedding of the last image is kept: prompts on the same image cost only the
    prompt encoder and mask decoder. ``points_per_side`` etc. are
    ``SamAutomaticMaskGenerator``'s (defaults: its own, chosen by Meta for ViT-H).
    """

    def __init__(
        self,
        sam,
        *,
        name: str = "sam",
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        min_mask_region_area: int = 0,
    ) -> None:
        from segment_anything import SamPredictor

        self.sam = sam.eval()
        self.name = name
        self.generator_options = {
            "points_per_side": points_per_side,
            "points_per_batch": points_per_batch,
            "pred_iou_thresh": pred_iou_thresh,
            "stability_score_thresh": stability_score_thresh,
            "min_mask_region_area": min_mask_region_area,
        }
        self._predictor = SamPredictor(self.sam)
        self._image_key: str | None = None
        self.image_encodes = 0  # how many times SAM's image encoder ran

    @torch.no_grad()
    def automatic(self, image: np.ndarray) -> MaskSet:
        """SAM's automatic masks of an (H, W, 3) uint8 RGB image, best predicted IoU first."""
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(self.sam, **self.generator_options)
        records = generator.generate(image)
        self.image_encodes += 1
        records.sort(key=lambda r: -r["predicted_iou"])
        height, width = image.shape[:2]
        masks = np.zeros((len(records), height, width), dtype=bool)
        for index, record in enumerate(records):
            masks[index] = record["segmentation"]
        scores = np.asarray([r["predicted_iou"] for r in records], dtype=np.float32).clip(0, 1)
        return MaskSet(masks, scores, ["automatic"] * len(records))

    @torch.no_grad()
    def prompted(self, image: np.ndarray, prompts: Prompts) -> MaskSet:
        """One mask per prompt object (:meth:`Prompts.objects`) of an (H, W, 3) uint8 image.

        A single point is ambiguous (SAM's paper): three masks are predicted and the one with
        the best predicted IoU is kept; several prompts give one mask directly (SAM's advice).
        """
        self._set_image(image)
        masks, scores, sources = [], [], []
        for prompt in prompts.objects():
            mask, score = self._predict(prompt)
            masks.append(mask)
            scores.append(score)
            sources.append(prompt.describe())
        return MaskSet(np.stack(masks), np.asarray(scores, dtype=np.float32), sources)

    def _set_image(self, image: np.ndarray) -> None:
        key = hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)
        if key != self._image_key:
            self._predictor.set_image(image)
            self._image_key = key
            self.image_encodes += 1

    def _predict(self, prompt: PromptObject) -> tuple[np.ndarray, float]:
        points = None
        if len(prompt.points):  # SAM scales by s itself: give x' with x' s = (x + 0.5) s - 0.5
            scale = np.asarray(self._predictor.input_size[::-1], dtype=np.float64) / np.asarray(
                self._predictor.original_size[::-1], dtype=np.float64
            )
            points = network_points(prompt.points, scale) / scale
        box = prompt.box
        single_point = box is None and len(prompt.points) == 1
        masks, scores, _ = self._predictor.predict(
            point_coords=points,
            point_labels=prompt.point_labels if points is not None else None,
            box=box,
            multimask_output=single_point,
        )
        best = int(np.argmax(scores))
        return masks[best].astype(bool), float(np.clip(scores[best], 0.0, 1.0))
