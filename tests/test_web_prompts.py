"""The web demo's Prompts tab without a browser: clicks become prompts, prompts become
labelled masks, and a model without a mask source says what to do."""

import numpy as np
import pytest
import torch

from ovseg.apps.web import Demo, DemoError, add_click, empty_prompts
from ovseg.sam.masks import SamMasks
from ovseg.sam.zoo import build_sam


def test_clicks_make_points_and_two_corners_make_a_box():
    state = add_click(empty_prompts(), "positive point", 3, 4)
    state = add_click(state, "negative point", 5, 6)
    state = add_click(state, "box corner", 30, 20)
    assert state["corner"] == [30, 20] and state["boxes"] == []
    state = add_click(state, "box corner", 10, 40)
    assert state["boxes"] == [[10, 20, 31, 41]] and state["corner"] is None
    assert state["points"] == [[3, 4], [5, 6]] and state["labels"] == [1, 0]
    with pytest.raises(DemoError, match="unknown click mode"):
        add_click(state, "lasso", 1, 1)


def test_prompted_masks_come_back_with_their_classes(parity_predictor):
    torch.manual_seed(0)
    demo = Demo(parity_predictor, model_note="test", sam_masks=SamMasks(build_sam("tiny")))
    image = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    try:
        picture, rows, status = demo.segment_prompts(image, empty_prompts(), "cat, dog", "")
        assert rows == [] and "No prompt yet" in status and picture.shape == image.shape
        state = add_click(empty_prompts(), "positive point", 20, 10)
        overlay, rows, status = demo.segment_prompts(image, state, "cat, dog", "")
        assert len(rows) == 1 and rows[0][0] == "positive point at 20,10"
        assert rows[0][2].split(" ")[0] in ("cat", "dog")
        assert overlay.shape[0] >= 40 and overlay.shape[1] > 60  # picture + legend
        # New classes: the same image's features serve again.
        _, _, status = demo.segment_prompts(image, state, "sky, road", "")
        assert "image features reused" in status
    finally:
        demo.close()


def test_without_prompt_head_or_sam_the_page_says_what_to_do(parity_predictor):
    demo = Demo(parity_predictor, model_note="test")
    try:
        state = add_click(empty_prompts(), "positive point", 2, 2)
        with pytest.raises(DemoError, match="--sam-weights"):
            demo.segment_prompts(np.zeros((8, 8, 3), np.uint8), state, "cat", "")
    finally:
        demo.close()
