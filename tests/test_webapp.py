"""The Gradio demo in a real browser (Debian's Chromium driven by Playwright): upload, set
classes, run; a class change is faster than the first run; a non-image shows an error.
Skips with the reason when Chromium or Playwright is missing (CI installs them: see .ci/run)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PARITY_WEIGHTS, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("gradio", reason="gradio is not installed")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )


def serve_demo(tmp_path_factory, model_args: list[str]):
    """Start demo/app.py with ``model_args`` on a free port; yields its URL, stops it after."""
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        GRADIO_ANALYTICS_ENABLED="False",
        OVSEG_CACHE=str(tmp_path_factory.mktemp("cache")),
    )
    log = open(tmp_path_factory.mktemp("log") / "app.log", "w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "demo" / "app.py"), *model_args, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process, log=Path(log.name))
    yield f"http://127.0.0.1:{port}/"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    yield from serve_demo(
        tmp_path_factory, ["--weights", str(PARITY_WEIGHTS), "--config", "fcclip_tiny_parity"]
    )


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def run_and_time(page, run: int) -> float:
    """Click Segment and wait for the status of run number ``run``."""
    start = time.perf_counter()
    page.click("#run")
    page.wait_for_function(
        "run => { const s = document.querySelector('#status'); "
        "return s && s.innerText.includes(`Run ${run}:`); }",
        arg=run,
        timeout=120_000,
    )
    return time.perf_counter() - start


def test_segment_switch_classes_and_error(app_url, browser, tmp_path):
    image = tmp_path / "scene.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    page = browser.new_page()
    page.goto(app_url)
    page.set_input_files("#input-image input[type=file]", str(image))
    page.fill("#classes textarea", "cat, dog, sky")
    first = run_and_time(page, 1)
    assert page.locator("#overlay img").count() == 1
    rows = page.locator("#segments tbody tr")
    assert rows.count() >= 1
    page.fill("#classes textarea", "zebra, road")
    second = run_and_time(page, 2)
    assert "image features reused" in page.inner_text("#status")
    assert second < first, (first, second)
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

    not_image = tmp_path / "notes.png"
    not_image.write_text("this is text, not an image")
    page.set_input_files("#input-image input[type=file]", str(not_image))
    page.click("#run")
    page.get_by_text("not an image", exact=False).first.wait_for(timeout=60_000)
    assert "Traceback" not in page.content()


@pytest.fixture(scope="module")
def tiny_app_url(tmp_path_factory):
    """The demo on the shipped synthetic_tiny, which has a prompt head."""
    yield from serve_demo(tmp_path_factory, ["--model", "synthetic_tiny", "--precision", "fp32"])


def test_a_click_on_a_shipped_scene_gives_the_object_and_its_class(tiny_app_url, browser):
    page = browser.new_page()
    page.goto(tiny_app_url)
    page.get_by_role("tab", name="Prompts").click()
    scene = ROOT / "ovseg" / "assets" / "examples" / "synthetic_val_00000.png"
    page.set_input_files("#prompt-image input[type=file]", str(scene))
    page.get_by_text("Prompts cleared", exact=False).first.wait_for(timeout=60_000)
    canvas = page.locator("#prompt-canvas img")
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()  # the 160x128 scene, no legend before the first click
    page.mouse.click(box["x"] + box["width"] * 91 / 160, box["y"] + box["height"] * 16 / 128)
    page.wait_for_function(
        "() => { const s = document.querySelector('#prompt-status'); "
        "return s && s.innerText.includes('prompted mask'); }",
        timeout=120_000,
    )
    table = page.locator("#prompt-table").text_content()
    assert "positive point at" in table and "triangle" in table, table
    assert "Traceback" not in page.content()


def test_heat_map_tab_shows_a_map_for_a_typed_phrase(tiny_app_url, browser, tmp_path):
    page = browser.new_page()
    page.goto(tiny_app_url)
    page.get_by_role("tab", name="Heat map").click()
    scene = ROOT / "ovseg" / "assets" / "examples" / "synthetic_val_00000.png"
    page.set_input_files("#heat-image input[type=file]", str(scene))
    page.fill("#heat-phrases textarea", "triangle")
    page.click("#heat-run")
    page.wait_for_function(
        "() => { const s = document.querySelector('#heat-status'); "
        "return s && s.innerText.includes('heat map(s)'); }",
        timeout=120_000,
    )
    assert page.locator("#heat-maps img").count() == 1
    page.screenshot(path=str(tmp_path / "heatmap.png"), full_page=True)
    page.fill("#heat-phrases textarea", " ")
    page.click("#heat-run")
    page.get_by_text("type a phrase", exact=False).first.wait_for(timeout=60_000)
    assert "Traceback" not in page.content()
