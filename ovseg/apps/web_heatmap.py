"""The web demo's Heat map tab: relevancy heat maps for any phrases over an image (see
:meth:`ovseg.predictor.OVSegPredictor.heatmap`). More phrases on the same image reuse its
features: only the new text is encoded."""

from __future__ import annotations

import re
import time

import numpy as np

MAX_PHRASES = 8


def split_phrases(text: str) -> list[str]:
    """One phrase per line, or phrases separated by ";" (commas stay inside a phrase: "red car,
    left"). DemoError-worthy ValueError for none or more than ``MAX_PHRASES``."""
    phrases = [p.strip() for p in re.split(r"[;\n]", text or "") if p.strip()]
    if not phrases:
        raise ValueError('type a phrase to look for, like "red car" (one per line, or ; between)')
    if len(phrases) > MAX_PHRASES:
        raise ValueError(f"{len(phrases)} phrases: at most {MAX_PHRASES} at once")
    return phrases


def heatmap_pictures(demo, image, text: str) -> tuple[np.ndarray, str]:
    """(H, W, 3) image and the phrase text -> (the heat maps side by side, two a row, as one
    picture; status)."""
    from ovseg.preprocess import as_rgb_array
    from ovseg.render import render_heatmaps

    if image is None:
        raise ValueError("upload an image first (or pick an example)")
    phrases = split_phrases(text)
    array = as_rgb_array(image)
    demo.check_image_size(array)
    start = time.perf_counter()
    encodes = demo.predictor.image_encodes
    maps = demo.predictor.heatmap(array, phrases)
    seconds = time.perf_counter() - start
    pictures = render_heatmaps(array, maps, phrases, model=demo.predictor.model_name)
    reused = demo.predictor.image_encodes == encodes
    status = (
        f"{len(phrases)} heat map(s) in {seconds:.2f} s"
        f"{' (image features reused)' if reused else ''}. Colour where the phrase matches "
        f"better than 'object / things / stuff / texture' (relevancy above 0.5). "
        f"{demo.model_note}"
    )
    return np.asarray(tile(pictures, columns=2)), status


def tile(pictures: list, *, columns: int, gap: int = 8):
    """PIL pictures in a grid, ``columns`` a row, on white."""
    from PIL import Image

    width = max(p.width for p in pictures)
    height = max(p.height for p in pictures)
    count = min(columns, len(pictures))
    rows = -(-len(pictures) // count)
    board = Image.new(
        "RGB", (count * width + (count - 1) * gap, rows * height + (rows - 1) * gap), "white"
    )
    for index, picture in enumerate(pictures):
        row, column = divmod(index, count)
        board.paste(picture, (column * (width + gap), row * (height + gap)))
    return board


def heatmap_tab(gr, demo, guarded) -> None:
    """The tab; ``guarded`` wraps a handler so bad input shows as a page message."""
    from ovseg.apps.web_inputs import tolerant_image_input
    from ovseg.assets import example_images
    from ovseg.preprocess import load_image

    def run(image_path, text):
        image = load_image(image_path) if image_path else None
        return heatmap_pictures(demo, image, text)

    with gr.Tab("Heat map"):
        with gr.Row():
            with gr.Column():
                image_in = tolerant_image_input(gr, label="image", elem_id="heat-image")
                phrases = gr.Textbox(
                    label="phrases (one per line, or ; between)",
                    value="triangle; grass",
                    lines=2,
                    elem_id="heat-phrases",
                )
                button = gr.Button("Show heat maps", variant="primary", elem_id="heat-run")
            with gr.Column():
                gallery = gr.Image(label="heat maps", elem_id="heat-maps", interactive=False)
                status = gr.Markdown(elem_id="heat-status")
        gr.Examples([str(p) for p in example_images()], inputs=image_in, label="examples")
        button.click(guarded(run), [image_in, phrases], [gallery, status], concurrency_limit=1)
