"""The Gradio web demo over OVSegPredictor: ``ovseg app`` (and ``demo/app.py``).

Image tab: upload or pick an example, name classes or pick a preset vocabulary, choose the
task; see the overlay with its legend, a table of segments, and download the label PNG and the
JSON. Changing only the classes reuses the image features (the predictor's cache). Prompts
tab: click positive / negative points and box corners on the image; each prompt object's mask
comes back with its top classes (masks from the model's prompt head, or from SAM when the demo
was started with SAM weights). Heat map tab: relevancy heat maps for any phrases. Video tab:
per-frame segmentation with tracked instance ids, an overlay MP4 and per-frame JSON.
"""

from __future__ import annotations

import functools
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ovseg import model_zoo
from ovseg.apps.web_heatmap import heatmap_tab
from ovseg.apps.web_inputs import tolerant_image_input

TYPED = "(type classes)"


def preset_choices() -> dict[str, str | None]:
    """Dropdown label -> shipped vocabulary name (None: the typed classes), from the one list
    of shipped vocabularies (ovseg.vocabulary.SHIPPED_VOCABULARIES)."""
    from ovseg.vocabulary import SHIPPED_VOCABULARIES, load_vocabulary

    return {TYPED: None} | {
        f"{title} ({len(load_vocabulary(short))})": short
        for short, (_, title) in SHIPPED_VOCABULARIES.items()
    }


MAX_IMAGE_PIXELS = 40_000_000
MAX_UPLOAD = "50mb"


class DemoError(ValueError):
    """Shown in the page as a message."""


CLICK_MODES = ("positive point", "negative point", "box corner")


def empty_prompts() -> dict:
    """The prompt tab's state: points [[x, y]], labels [1 | 0], boxes [[x0, y0, x1, y1]] and
    the first corner of a box being drawn (or None)."""
    return {"points": [], "labels": [], "boxes": [], "corner": None}


def add_click(state: dict, mode: str, x: float, y: float) -> dict:
    """A click at image pixel (x, y) in ``mode`` (one of CLICK_MODES) added to a copy of the
    state: a point, or a box corner (the second corner closes the box)."""
    state = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}
    if mode == "box corner":
        if state["corner"] is None:
            state["corner"] = [x, y]
        else:
            (x0, y0), (x1, y1) = state["corner"], (x, y)
            state["boxes"].append([min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1])
            state["corner"] = None
    elif mode in CLICK_MODES:
        state["points"].append([x, y])
        state["labels"].append(1 if mode == "positive point" else 0)
    else:
        raise DemoError(f"unknown click mode '{mode}': choose one of {', '.join(CLICK_MODES)}")
    return state


def prompts_drawn(state: dict) -> bool:
    """Whether the Prompts canvas shows the prompt overlay (drawn at the model's output size,
    a legend beside it) rather than the upload itself: once a point or a box is in."""
    return bool(state["points"] or state["boxes"])


def canvas_to_image(
    state: dict, x: float, y: float, *, image_size: tuple[int, int], output_size: tuple[int, int]
) -> tuple[float, float] | None:
    """A click at pixel (x, y) of the picture the Prompts canvas shows for ``state`` -> the
    same place in the image (``image_size`` (H, W)); None on the legend, outside the picture.
    The canvas shows the upload at its own size until a prompt is in (a fresh canvas, one box
    corner), then the overlay at ``output_size`` (H, W) (:func:`prompts_drawn`)."""
    height, width = image_size
    shown_h, shown_w = output_size if prompts_drawn(state) else image_size
    if not (0 <= x < shown_w and 0 <= y < shown_h):
        return None
    return x * width / shown_w, y * height / shown_h


class Demo:
    """State of a running demo: one predictor (and optionally a SAM for prompts), a temp
    directory for downloads."""

    def __init__(
        self, predictor, *, model_note: str, max_frames: int = 150, sam_masks=None
    ) -> None:
        self.predictor = predictor
        self.sam_masks = sam_masks
        self.model_note = model_note
        self.max_frames = max_frames
        self.workdir = Path(tempfile.mkdtemp(prefix="ovseg-demo-"))
        self.presets = preset_choices()
        self.runs = 0

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def vocabulary(self, classes: str, preset: str):
        from ovseg.vocabulary import load_vocabulary, parse_class_list

        name = self.presets.get(preset)
        if name is not None:
            return load_vocabulary(name)
        if not (classes or "").replace(",", "").strip():
            raise DemoError(
                'type the classes to find, like "cat, dog/puppy, sky" (commas between classes, '
                "/ between synonyms), or pick a preset vocabulary"
            )
        return parse_class_list(classes)

    def preset_note(self, classes: str, preset: str) -> str:
        """A sentence for the status line when a preset replaces typed classes (else "")."""
        if self.presets.get(preset) is None or not (classes or "").replace(",", "").strip():
            return ""
        return (
            f" Classes from the preset {preset}; the typed classes are not used (pick "
            f"{TYPED} to use them)."
        )

    def check_image_size(self, array: np.ndarray) -> None:
        """DemoError for an image above ``MAX_IMAGE_PIXELS``."""
        if array.shape[0] * array.shape[1] > MAX_IMAGE_PIXELS:
            raise DemoError(
                f"the image has {array.shape[1]}x{array.shape[0]} pixels; the limit "
                f"is {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
            )

    def set_keep_novel(self, keep: bool) -> None:
        """Panoptic output keeps the masks of unseen classes (the predictor's
        ``inference.keep_novel``); DemoError where the model's ensemble gives the frozen CLIP
        no say on them."""
        import dataclasses

        from ovseg.predictor_base import check_keep_novel

        cfg = self.predictor.cfg
        if cfg.inference.keep_novel == bool(keep):
            return
        inference = dataclasses.replace(cfg.inference, keep_novel=bool(keep))
        try:
            check_keep_novel(inference)
        except ValueError as error:
            raise DemoError(str(error)) from None
        self.predictor.cfg = dataclasses.replace(cfg, inference=inference)

    def segment_image(
        self,
        image,
        classes: str,
        preset: str,
        task: str,
        name: str = "image",
        keep_novel: bool | None = None,
    ):
        """-> overlay (H, W, 3), table rows, label PNG path, JSON path, status text. The
        downloads are named after the image (``name``) and the task. ``keep_novel``: see
        :meth:`set_keep_novel` (None: as it is)."""
        from ovseg.apps.outputs import write_outputs
        from ovseg.preprocess import as_rgb_array
        from ovseg.render import render

        if image is None:
            raise DemoError("upload an image first (or pick an example)")
        array = as_rgb_array(image)
        self.check_image_size(array)
        vocabulary = self.vocabulary(classes, preset)
        if keep_novel is not None:
            self.set_keep_novel(keep_novel)
        start = time.perf_counter()
        encodes = self.predictor.image_encodes
        result = self.predictor.predict(array, vocabulary=vocabulary, tasks=(task,))
        seconds = time.perf_counter() - start
        rendered = render(result, array, task, model=self.predictor.model_name)
        rows = [[s["class"], round(float(s["score"]), 3), s["area"]] for s in rendered.shown]
        self.runs += 1
        run_dir = self.workdir / f"run{self.runs}"  # one folder a run: names never collide
        run_dir.mkdir()
        label_path = run_dir / f"{name}_{task}_labels.png"
        json_path = run_dir / f"{name}_{task}.json"
        write_outputs({label_path: rendered.label_image(), json_path: rendered.record})
        caveat = rendered.record.get("model_caveat")
        reused = self.predictor.image_encodes == encodes
        status = (
            f"Run {self.runs}: {len(rows)} segments in {seconds:.2f} s"
            f"{' (image features reused)' if reused else ''}."
            f"{self.preset_note(classes, preset)} {self.model_note}"
            + (f"\n\n**Caution:** {caveat}." if caveat else "")
        )
        return np.asarray(rendered.overlay), rows, str(label_path), str(json_path), status

    def prompt_source(self) -> str | None:
        """What draws prompted masks here ("SAM ..." / "the model's prompt head"), or None."""
        if self.sam_masks is not None:
            return f"SAM ({self.sam_masks.name})"
        if self.predictor.model.prompt_head is not None:
            return "the model's prompt head"
        return None

    def segment_prompts(self, image, state: dict, classes: str, preset: str):
        """-> overlay (prompts and masks drawn), table rows [prompt, mask score, top classes],
        status text. An image with no prompts yet is shown as it is."""
        from ovseg.preprocess import as_rgb_array
        from ovseg.render import render
        from ovseg.sam.prompts import make_prompts

        if image is None:
            raise DemoError("upload an image first (or pick an example)")
        source = self.prompt_source()
        if source is None:
            raise DemoError(
                f"model {self.predictor.model_name} has no prompt head: start the demo with "
                "--sam-weights FILE (a SAM checkpoint) to click on objects"
            )
        array = as_rgb_array(image)
        if not prompts_drawn(state):
            hint = "click the box's second corner" if state["corner"] else "click the image"
            return array, [], f"No prompt yet: {hint}."
        prompts = make_prompts(
            state["points"] or None,
            state["labels"] or None,
            state["boxes"] or None,
            image_size=array.shape[:2],
        )
        self.predictor.set_vocabulary(self.vocabulary(classes, preset))
        start = time.perf_counter()
        encodes = self.predictor.image_encodes
        result = self.predictor.segment_prompts(array, prompts=prompts, sam=self.sam_masks)
        seconds = time.perf_counter() - start
        rendered = render(
            result,
            array,
            "prompts",
            model=self.predictor.model_name,
            prompts=prompts,
            masks_from=None if self.sam_masks is None else self.sam_masks.name,
        )
        rows = [
            [
                p["prompt"],
                round(p["mask_score"], 3),
                ", ".join(f"{c['class']} {c['score']:.2f}" for c in p["top_classes"][:3]),
            ]
            for p in result["prompts"]
        ]
        reused = " (image features reused)" if self.predictor.image_encodes == encodes else ""
        return (
            np.asarray(rendered.overlay),
            rows,
            f"{len(rows)} prompted mask(s) from {source} in {seconds:.2f} s{reused}."
            + self.preset_note(classes, preset),
        )

    def segment_video(self, video_path, classes: str, preset: str, progress=None):
        from ovseg.video import segment_video

        if not video_path:
            raise DemoError("upload a video first")
        self.predictor.set_vocabulary(self.vocabulary(classes, preset))
        out_dir = Path(tempfile.mkdtemp(dir=self.workdir))
        start = time.perf_counter()
        record = segment_video(
            self.predictor, video_path, out_dir, max_frames=self.max_frames, progress=progress
        )
        fps = record["frames"] / (time.perf_counter() - start)
        mp4, frames_json = record["outputs"]
        status = f"{record['frames']} frames at {fps:.1f} frames/s."
        return mp4, frames_json, status + self.preset_note(classes, preset)


def _guarded(gr, function):
    """Run ``function``; bad input becomes a message in the page, never a stack trace."""
    from ovseg.preprocess import ImageError
    from ovseg.video import VideoError

    @functools.wraps(function)  # gradio reads the signature (a gr.SelectData parameter)
    def wrapper(*args):
        try:
            return function(*args)
        except (DemoError, ImageError, VideoError, ValueError, FileNotFoundError) as error:
            raise gr.Error(page_message(str(error)), print_exception=False) from None

    return wrapper


_SERVER_PATH = re.compile(r"(?:/[^/\s:'\"]+)+/([^/\s:'\"]+)")


def page_message(message: str) -> str:
    """An error as the page shows it: the server's paths cut to file names (an upload's temp
    folder means nothing to the person who uploaded it)."""
    return _SERVER_PATH.sub(r"\1", message)


def _image_tab(gr, demo: Demo) -> None:
    from ovseg.assets import example_images
    from ovseg.preprocess import load_image

    def run_image(image_path, classes, preset, task, keep_novel):
        image = load_image(image_path) if image_path else None
        name = Path(image_path).stem if image_path else "image"
        return demo.segment_image(image, classes, preset, task, name=name, keep_novel=keep_novel)

    with gr.Tab("Image"):
        with gr.Row():
            with gr.Column():
                image_in = tolerant_image_input(gr, label="image", elem_id="input-image")
                classes = gr.Textbox(
                    label="classes (comma separated; synonyms with /)",
                    value="star, ring, circle, grass, water, sky",
                    elem_id="classes",
                )
                preset = gr.Dropdown(
                    list(demo.presets),
                    value=TYPED,
                    label="or a preset vocabulary",
                    elem_id="preset",
                )
                task = gr.Radio(
                    ["panoptic", "semantic", "instance"],
                    value="panoptic",
                    label="task",
                    elem_id="task",
                )
                keep_novel = gr.Checkbox(
                    value=demo.predictor.cfg.inference.keep_novel,
                    label="panoptic: keep classes unseen in training (the frozen CLIP names "
                    "them; off: the official FC-CLIP rule)",
                    elem_id="keep-novel",
                )
                run = gr.Button("Segment", variant="primary", elem_id="run")
            with gr.Column():
                overlay = gr.Image(label="result", elem_id="overlay", interactive=False)
                status = gr.Markdown(elem_id="status")
                table = gr.Dataframe(
                    headers=["class", "score", "area"],
                    label="segments",
                    elem_id="segments",
                    interactive=False,
                )
                with gr.Row():
                    label_file = gr.File(label="label PNG", elem_id="label-file")
                    json_file = gr.File(label="JSON", elem_id="json-file")
        gr.Examples([str(p) for p in example_images()], inputs=image_in, label="examples")
        run.click(
            _guarded(gr, run_image),
            [image_in, classes, preset, task, keep_novel],
            [overlay, table, label_file, json_file, status],
            concurrency_limit=1,
        )


def _prompt_tab(gr, demo: Demo) -> None:
    from ovseg.assets import example_images
    from ovseg.preprocess import load_image

    def redraw(image_path, state, classes, preset):
        image = load_image(image_path) if image_path else None
        return demo.segment_prompts(image, state, classes, preset)

    def click(image_path, state, mode, classes, preset, event: gr.SelectData):
        if not image_path:
            raise DemoError("upload an image first (or pick an example)")
        image_size = load_image(image_path).shape[:2]
        output_size = demo.predictor.output_size(*image_size)
        place = canvas_to_image(state, *event.index, image_size=image_size, output_size=output_size)
        if place is None:  # the legend beside the picture
            return gr.skip(), state, gr.skip(), "Click on the picture, not the legend."
        state = add_click(state, mode, *place)
        overlay, rows, status = redraw(image_path, state, classes, preset)
        return overlay, state, rows, status

    # gradio passes the click's SelectData to the parameter annotated with the class itself
    # (this module's annotations are strings, and gr is not a global here).
    click.__annotations__["event"] = gr.SelectData

    def clear(image_path):
        image = load_image(image_path) if image_path else None
        return image, empty_prompts(), [], "Prompts cleared."

    with gr.Tab("Prompts"):
        state = gr.State(empty_prompts())
        source = demo.prompt_source()
        gr.Markdown(
            f"Click objects: masks from {source}, labelled by the frozen CLIP."
            if source
            else "This model has no prompt head: start the demo with `--sam-weights FILE`."
        )
        with gr.Row():
            with gr.Column():
                image_in = tolerant_image_input(gr, label="image", elem_id="prompt-image")
                mode = gr.Radio(
                    list(CLICK_MODES), value=CLICK_MODES[0], label="a click adds", elem_id="mode"
                )
                classes = gr.Textbox(
                    label="classes (comma separated; synonyms with /)",
                    value="star, ring, circle, square, triangle, heart, grass, water, sky",
                    elem_id="prompt-classes",
                )
                preset = gr.Dropdown(
                    list(demo.presets), value=TYPED, label="or a preset vocabulary"
                )
                with gr.Row():
                    relabel = gr.Button("Label again", elem_id="relabel")
                    reset = gr.Button("Clear prompts", elem_id="clear-prompts")
            with gr.Column():
                canvas = gr.Image(label="click here", elem_id="prompt-canvas", interactive=False)
                status = gr.Markdown(elem_id="prompt-status")
                table = gr.Dataframe(
                    headers=["prompt", "mask score", "top classes"],
                    label="prompted masks",
                    elem_id="prompt-table",
                    interactive=False,
                )
        gr.Examples([str(p) for p in example_images()], inputs=image_in, label="examples")
        image_in.change(_guarded(gr, clear), [image_in], [canvas, state, table, status])
        reset.click(_guarded(gr, clear), [image_in], [canvas, state, table, status])
        canvas.select(
            _guarded(gr, click),
            [image_in, state, mode, classes, preset],
            [canvas, state, table, status],
            concurrency_limit=1,
        )
        relabel.click(
            _guarded(gr, redraw), [image_in, state, classes, preset], [canvas, table, status]
        )


def _video_tab(gr, demo: Demo) -> None:
    def run_video(video, classes, preset, progress=gr.Progress()):  # noqa: B008 (gradio idiom)
        return demo.segment_video(
            video, classes, preset, progress=lambda done, total: progress((done, total))
        )

    with gr.Tab("Video"):
        with gr.Row():
            with gr.Column():
                video_in = gr.Video(
                    label=f"video (at most {demo.max_frames} frames)", elem_id="input-video"
                )
                video_classes = gr.Textbox(
                    label="classes", value="star, ring, circle, grass", elem_id="video-classes"
                )
                video_preset = gr.Dropdown(
                    list(demo.presets), value=TYPED, label="or a preset vocabulary"
                )
                video_run = gr.Button("Segment video", variant="primary", elem_id="video-run")
            with gr.Column():
                video_out = gr.Video(label="overlay", elem_id="video-out")
                video_json = gr.File(label="per-frame JSON")
                video_status = gr.Markdown()
        video_run.click(
            _guarded(gr, run_video),
            [video_in, video_classes, video_preset],
            [video_out, video_json, video_status],
            concurrency_limit=1,
        )


def build_app(demo: Demo):
    """The Gradio Blocks app: an image tab and a video tab over ``demo``."""
    import gradio as gr

    with gr.Blocks(title="ovseg: open-vocabulary segmentation") as app:
        gr.Markdown(
            "# ovseg: open-vocabulary segmentation\nName any classes, get panoptic, "
            f"semantic or instance segmentation. **Model:** {demo.model_note}"
        )
        _image_tab(gr, demo)
        _prompt_tab(gr, demo)
        heatmap_tab(gr, demo, functools.partial(_guarded, gr))
        _video_tab(gr, demo)
    return app


def describe_model(name: str) -> str:
    entry = model_zoo.get_entry(name)
    return f"`{name}`: {entry.description}"


def _check_can_serve(host: str, port: int) -> None:
    """ValueError (one line) without gradio, or when ``port`` on ``host`` is taken."""
    import socket

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the web demo needs gradio: pip install 'ovseg[demo]'") from None
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ValueError(
                f"cannot listen on {host}:{port} ({error.strerror or error}): another program "
                "(an earlier demo?) has it; give another --port"
            ) from None


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    import argparse
    import os
    import signal
    import sys

    from ovseg.apps.arguments import add_model_arguments, add_threads_argument

    parser = argparse.ArgumentParser(prog=prog, description="ovseg web demo (Gradio)")
    add_model_arguments(parser)
    add_threads_argument(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: local only; 0.0.0.0 exposes the demo to your network)",
    )
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--queue-size", type=int, default=8, help="requests waiting at most")
    parser.add_argument("--max-frames", type=int, default=150)
    from ovseg.sam.zoo import DEFAULT_SAM, SAM_ARCHITECTURES

    parser.add_argument(
        "--sam-weights",
        help="a SAM checkpoint: the Prompts tab draws masks with SAM (default: the model's "
        "prompt head, if it has one)",
    )
    parser.add_argument(
        "--sam-model",
        default=DEFAULT_SAM,
        choices=tuple(SAM_ARCHITECTURES),
        help="the architecture of --sam-weights (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    # Gradio's usage analytics stay off unless the user turns them on (read at import).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from ovseg.apps.arguments import load_predictor_from_arguments, say_precision
    from ovseg.threads import set_threads

    messages = []
    try:
        _check_can_serve(args.host, args.port)  # before the model loads
        set_threads(args.threads)
        predictor = load_predictor_from_arguments(args, log=lambda m, **_: messages.append(m))
        sam_masks = None
        if args.sam_weights:
            from ovseg.sam.masks import SamMasks
            from ovseg.sam.zoo import load_sam

            sam = load_sam(args.sam_model, weights=args.sam_weights, device=predictor.device)
            sam_masks = SamMasks(sam, name=Path(args.sam_weights).name)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    note = (
        describe_model(predictor.model_name)
        if predictor.model_name in model_zoo.MODEL_ZOO
        else f"`{Path(predictor.model_name).name}`"
    )
    if messages:
        real = model_zoo.get_entry(model_zoo.DEFAULT_MODEL).filename
        note += f" (the real model's weights were not found: put {real} on the server to use it)"
    for message in messages:
        print(message, file=sys.stderr)
    say_precision(predictor)
    demo = Demo(predictor, model_note=note, max_frames=args.max_frames, sam_masks=sam_masks)
    # SIGTERM (a service manager, docker stop) ends the demo like Ctrl-C: downloads removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(
        f"ovseg web demo: model {predictor.model_name} on {predictor.device}; downloads in "
        f"{demo.workdir} (removed on exit); http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        app = build_app(demo)
        app.queue(max_size=args.queue_size, default_concurrency_limit=1)
        app.launch(
            server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD, show_error=False
        )
    finally:
        demo.close()
    return 0
