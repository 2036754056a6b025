"""The web demo's inputs reach ovseg the way the command line's do (no browser needed)."""

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="gradio is not installed")


def test_a_16_bit_png_upload_is_read_like_the_command_line_reads_it(tmp_path):
    """gradio converted uploads to RGB before ovseg's loader saw them: a 16-bit grayscale
    PNG came out 99.6% white. The component now passes the uploaded file through."""
    from gradio.data_classes import ImageData

    from ovseg.apps.web import tolerant_image_input
    from ovseg.preprocess import load_image

    ramp = (np.linspace(0, 60000, 64 * 48).reshape(48, 64)).astype(np.uint16)
    path = tmp_path / "depth16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    with gr.Blocks():
        component = tolerant_image_input(gr, label="image")
    handed = component.preprocess(ImageData(path=str(path), orig_name="depth16.png"))
    seen_by_demo = load_image(handed)
    seen_by_cli = load_image(path)
    np.testing.assert_array_equal(seen_by_demo, seen_by_cli)
    assert (seen_by_demo == 255).mean() < 0.05  # not washed out
