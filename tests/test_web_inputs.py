"""The web demo's inputs reach ovseg the way the command line's do (no browser needed)."""

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="gradio is not installed")


def test_a_16_bit_png_upload_is_read_like_the_command_line_reads_it(tmp_path):
    """gradio converted uploads to RGB before ovseg's loader saw them: a 16-bit grayscale
    PNG came out 99.6% white. The component now passes the uploaded file through."""
    from gradio.data_classes import ImageData

    from ovseg.apps.web_inputs import tolerant_image_input
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


def test_downloads_are_named_after_the_image_and_messages_speak_to_the_page(parity_predictor):
    from ovseg.apps.web import TYPED, Demo, DemoError, page_message

    demo = Demo(parity_predictor, model_note="test")
    try:
        image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
        first = demo.segment_image(image, "cat, sky", TYPED, "panoptic", name="kitchen")
        again = demo.segment_image(image, "cat, dog", TYPED, "panoptic", name="kitchen")
        assert first[2].endswith("kitchen_panoptic_labels.png")
        assert first[3].endswith("kitchen_panoptic.json")
        assert first[2] != again[2]  # a later run never overwrites an earlier download
        with pytest.raises(DemoError) as empty:
            demo.segment_image(image, " , ", TYPED, "panoptic")
        assert "--" not in str(empty.value) and "preset" in str(empty.value)
    finally:
        demo.close()
    assert not demo.workdir.exists()
    said = page_message("/tmp/gradio/0a1b2c/holiday photo.png is truncated or corrupt (x)")
    assert said == "holiday photo.png is truncated or corrupt (x)"


def test_a_preset_that_replaces_typed_classes_says_so(parity_predictor):
    """Picking a preset silently replaced the classes typed in the box."""
    from ovseg.apps.web import TYPED, Demo

    demo = Demo(parity_predictor, model_note="test")
    try:
        preset = next(label for label in demo.presets if label.startswith("Synthetic"))
        image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
        status = demo.segment_image(image, "cat, dog", preset, "panoptic")[4]
        assert f"preset {preset}; the typed classes are not used" in status
        typed = demo.segment_image(image, "cat, dog", TYPED, "panoptic")[4]
        assert "preset" not in typed
    finally:
        demo.close()


def test_analytics_are_off_unless_asked_for(monkeypatch, capsys):
    from ovseg.apps.web import main

    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    assert main(["--weights", "/no/such/file.safetensors", "--config", "synthetic_tiny"]) == 2
    import os

    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    main(["--weights", "/no/such/file.safetensors", "--config", "synthetic_tiny"])
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "True"  # the user's choice stands


def test_sigterm_removes_the_downloads_and_the_console_names_the_model(tmp_path):
    """The README promises the download folder is removed on exit; SIGTERM used to leave it."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from conftest import PARITY_WEIGHTS, free_port, wait_for_port

    port = free_port()
    env = dict(os.environ, OVSEG_CACHE=str(tmp_path / "cache"))
    process = subprocess.Popen(
        [sys.executable, "-m", "ovseg", "app", "--weights", str(PARITY_WEIGHTS)]
        + ["--config", "fcclip_tiny_parity", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = ""
        while "ovseg web demo:" not in line:
            line = process.stderr.readline()
            assert line, "the demo ended before saying which model it serves"
        assert "fcclip_tiny_official.pth" in line
        workdir = re.search(r"downloads in (\S+)", line).group(1)
        assert os.path.isdir(workdir)
        wait_for_port(port, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert not os.path.exists(workdir)
    finally:
        if process.poll() is None:
            process.kill()


def test_the_page_says_when_the_model_cannot_be_trusted(parity_predictor):
    from ovseg.apps.web import TYPED, Demo

    demo = Demo(parity_predictor, model_note="test")
    name = parity_predictor.model_name
    try:
        parity_predictor.model_name = "fcclip_tiny_parity"  # as the zoo names it
        image = np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)
        *_, json_path, status = demo.segment_image(image, "cat", TYPED, "semantic")
        assert "**Caution:**" in status and "RANDOM weights" in status
        import json

        assert "RANDOM weights" in json.loads(open(json_path).read())["model_caveat"]
    finally:
        parity_predictor.model_name = name
        demo.close()
