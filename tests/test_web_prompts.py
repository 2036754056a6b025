"""The web demo's Prompts tab without a browser: clicks become prompts, prompts become
labelled masks, and a model without a mask source says what to do."""

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.apps.web import (
    Demo,
    DemoError,
    add_click,
    build_app,
    canvas_to_image,
    empty_prompts,
)
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


# A 2400 x 1400 upload: above the 2048 x 1024-pixel output limit, the overlay is 1896 x 1106.
UPLOAD = (1400, 2400)
OVERLAY = (1106, 1896)


def test_a_fresh_canvas_shows_the_upload_itself():
    fresh = empty_prompts()
    assert canvas_to_image(fresh, 2300, 700, image_size=UPLOAD, output_size=OVERLAY) == (2300, 700)
    assert canvas_to_image(fresh, 2400, 700, image_size=UPLOAD, output_size=OVERLAY) is None


def test_after_a_first_box_corner_the_canvas_still_shows_the_upload():
    corner = add_click(empty_prompts(), "box corner", 100, 200)
    place = canvas_to_image(corner, 2000, 1300, image_size=UPLOAD, output_size=OVERLAY)
    assert place == (2000, 1300)


def test_on_the_overlay_a_click_is_scaled_and_the_legend_is_refused():
    drawn = add_click(empty_prompts(), "positive point", 10, 10)
    x, y = canvas_to_image(drawn, 1896 / 2, 1106 / 2, image_size=UPLOAD, output_size=OVERLAY)
    assert (x, y) == pytest.approx((1200, 700))
    assert canvas_to_image(drawn, 1900, 500, image_size=UPLOAD, output_size=OVERLAY) is None
    assert canvas_to_image(drawn, 500, 1110, image_size=UPLOAD, output_size=OVERLAY) is None


def test_the_prompt_tab_maps_clicks_on_each_canvas_it_shows(parity_predictor, tmp_path):
    """The page's click handler itself: the fresh upload, one box corner, then the overlay."""
    import gradio as gr

    upload = tmp_path / "wide.png"
    Image.fromarray(np.zeros((UPLOAD[0], UPLOAD[1], 3), np.uint8)).save(upload)
    demo = Demo(parity_predictor, model_note="test")
    assert demo.predictor.output_size(*UPLOAD) == OVERLAY
    demo.segment_prompts = lambda image, state, classes, preset: (None, [], "drawn")
    try:
        app = build_app(demo)
        (click,) = [f.fn for f in app.fns.values() if f.name == "click"]

        def press(state, mode, x, y):
            event = gr.SelectData(None, {"index": [x, y], "value": None})
            _, state, _, status = click(str(upload), state, mode, "cat", "", event)
            return state, status

        state, status = press(empty_prompts(), "box corner", 2300, 700)  # fresh: the upload
        assert state["corner"] == [2300, 700], status
        state, status = press(state, "box corner", 2000, 1300)  # one corner: still the upload
        assert state["boxes"] == [[2000, 700, 2301, 1301]], status
        state, status = press(state, "positive point", 1896 / 2, 1106 / 2)  # the overlay
        assert state["points"] == [pytest.approx([1200, 700])], status
        state, status = press(state, "positive point", 2000, 500)  # the overlay's legend
        assert "not the legend" in status and len(state["points"]) == 1
    finally:
        demo.close()
