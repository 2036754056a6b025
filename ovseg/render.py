"""The one output step: a predictor result and the image it was made from -> what every front
end shows and writes (the overlay picture, the label map, the JSON record). ``ovseg predict``,
the web demo and video all call :func:`render` (and :func:`render_heatmaps`), so that they
resize (:func:`ovseg.preprocess.resize_image`, bilinear), draw and record a result alike.

The data is :mod:`ovseg.results`, the pictures :mod:`ovseg.visualize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ovseg.results import INSTANCE_SCORE_THRESHOLD, describe, image_record, label_map_image


@dataclass
class Rendered:
    """One image's result as it is shown and written.

    segments: :func:`ovseg.results.describe`'s (``track_id`` on tracked things);
    label_map: (h, w) at the output size (see ``describe``); overlay: the image at the output
    size, segments drawn, with its legend; record: the JSON record (``image_record`` and what
    made the result: prompts, mask source, head, keep-novel, the model's caveat).
    """

    task: str
    segments: list[dict]
    label_map: np.ndarray
    overlay: Image.Image
    record: dict

    @property
    def shown(self) -> list[dict]:
        """The segments drawn (instances below the score threshold are not)."""
        return [s for s in self.segments if s.get("shown", True)]

    def label_image(self) -> Image.Image:
        """The label PNG (panoptic ids in COCO's RGB encoding)."""
        return label_map_image(self.label_map, self.task)


def render(
    result: dict,
    image: np.ndarray,
    task: str,
    *,
    model: str,
    score_threshold: float = INSTANCE_SCORE_THRESHOLD,
    prompts=None,
    masks_from: str | None = None,
    head: str = "fcclip",
    tracker=None,
    image_name: str | None = None,
) -> Rendered:
    """Describe, draw and record one result.

    Args:
        result: a predictor result (``predict``, ``segment_prompts``, ``segment_masks``).
        image: (H, W, 3) uint8, the image at ``result["image_size"]``; drawn resized to the
            output size.
        task: "panoptic", "semantic", "instance" or "prompts" (every prompted mask is drawn
            and in the label map, whatever its score).
        model: the model's name, under the legend and in the record.
        score_threshold: instances scoring less are listed in the record only.
        prompts: the :class:`ovseg.sam.prompts.Prompts` to mark on the picture.
        masks_from: the mask source when not the model's (a SAM checkpoint's name).
        head: the head that classified ("pixel-text" is said).
        tracker: an :class:`ovseg.tracking.IoUTracker` carried across a video's frames: shown
            things get a ``track_id``, their colour and a "#id" (semantic segments are
            classes, never tracked).
        image_name: recorded as ``image`` (a path).
    Raises ValueError when ``image`` is not at the result's image size.
    """
    from ovseg.model_zoo import model_caveat, model_tag
    from ovseg.preprocess import resize_image
    from ovseg.visualize import draw_result

    if tuple(image.shape[:2]) != tuple(result["image_size"]):
        raise ValueError(
            f"image {tuple(image.shape[:2])} is not the result's image {result['image_size']}"
        )
    threshold = 0.0 if task == "prompts" else score_threshold
    label_map, segments = describe(result, task, score_threshold=threshold)
    output_size = tuple(result["output_size"])
    if tracker is not None and task != "semantic":
        from ovseg.tracking import track_segments

        things = [s for s in segments if s["isthing"] and s.get("shown", True)]
        track_segments(tracker, things, output_size)
    note = f"model: {model_tag(model)}"
    if masks_from is not None:
        note += f", masks: {masks_from}"
    if head == "pixel-text":
        note += ", pixel-text head"
    overlay = draw_result(
        resize_image(image, output_size),
        segments,
        task,
        note=note,
        prompts=prompts,
        prompt_scale=output_size[0] / image.shape[0],
    )
    record = image_record(result, segments, task=task, model=model, image=image_name)
    if task == "prompts":
        record["prompts"] = result["prompts"]
    if masks_from is not None:
        record["masks_from"] = masks_from
    if head != "fcclip":
        record["head"] = head
    if result.get("keep_novel"):
        record["keep_novel"] = True
    caveat = model_caveat(model, result["vocabulary"].classes)
    if caveat:
        record["model_caveat"] = caveat
    return Rendered(task, segments, np.asarray(label_map), overlay, record)


def render_heatmaps(
    image: np.ndarray, maps: np.ndarray, phrases: list[str], *, model: str
) -> list[Image.Image]:
    """One picture per phrase: (H, W, 3) uint8 ``image`` and its (P, h, w) relevancy ``maps``
    (:meth:`ovseg.predictor.OVSegPredictor.heatmap`, at the output size) -> the heat maps
    over the image resized like :func:`render`'s, the model under each."""
    from ovseg.model_zoo import model_tag
    from ovseg.preprocess import resize_image
    from ovseg.visualize import draw_heatmap

    shown = resize_image(image, maps.shape[1:])
    note = f"model: {model_tag(model)}"
    return [
        draw_heatmap(shown, relevancy, phrase, note=note)
        for phrase, relevancy in zip(phrases, maps, strict=True)
    ]
