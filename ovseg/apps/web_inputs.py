"""The web demo's input components, shared by its tabs (:mod:`ovseg.apps.web` and
:mod:`ovseg.apps.web_heatmap`; here so that neither imports the other for them)."""

from __future__ import annotations


def tolerant_image_input(gr, **kwargs):
    """An image input that hands the uploaded file itself to ovseg's loader, as the command
    line reads it: gradio's default image_mode="RGB" converts first, which turned a 16-bit
    PNG white; files PIL cannot open reach the loader too, whose message says what is wrong
    (gradio's own error comes before the handler runs, without one)."""
    from PIL import UnidentifiedImageError

    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    preprocess = component.preprocess

    def lenient(payload):
        try:
            return preprocess(payload)
        except (UnidentifiedImageError, OSError, SyntaxError):
            return payload.path

    component.preprocess = lenient
    return component
