"""``ovseg export``: a model as ONNX graphs whose vocabulary stays open.

An export folder holds ``image_encoder.onnx`` (image -> query embeddings, mask logits,
mask-pooled CLIP embeddings, dense CLIP map), ``classifier.onnx`` (those + text embeddings of
any K classes -> ensemble class logits), optionally ``text_encoder.onnx`` (CLIP token ids ->
text embeddings, so new class names need no PyTorch model), and ``export.json`` (pre- and
post-processing settings, the prompt templates, the training vocabulary that decides seen
classes, the check run at export). :class:`ovseg.export.OnnxPredictor` runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from ovseg.export.graphs import (
    ClassifierGraph,
    ImageEncoderGraph,
    TextEncoderGraph,
    learned_context,
    reads_image_for_text,
)

FORMAT_VERSION = 1
MIN_OPSET = 17
DEFAULT_OPSET = 18
GRAPHS = ("image_encoder", "classifier", "text_encoder")
# The largest exported side, in units of the size divisibility (32 px): 4096 px.
MAX_SIDE_UNITS = 128


class ExportError(ValueError):
    """An export that cannot be written or read: the message says what to do."""


def _onnx_export(module, args, path: Path, *, input_names, output_names, dynamic_shapes, opset):
    # optimize=False: onnxscript's optimizer (0.7) folds "x + 1e-8" into "x" (it treats
    # constants within 1e-8 of zero as zero), which turns FC-CLIP's empty-mask pooling
    # (area + 1e-8) into 0 / 0 = NaN. ONNX Runtime applies its own graph optimizations.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=opset,
            optimize=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def export_image_encoder(model, path: Path, *, example_hw=(256, 320), opset=DEFAULT_OPSET):
    """Write ``image_encoder.onnx`` with a dynamic image size (multiples of 32)."""
    height, width = example_hw
    if height == width:
        raise ValueError("the example image must not be square: export would tie H to W")
    image = torch.randn(1, 3, height, width)
    units_h = torch.export.Dim("height_32", min=2, max=MAX_SIDE_UNITS)
    units_w = torch.export.Dim("width_32", min=2, max=MAX_SIDE_UNITS)
    _onnx_export(
        ImageEncoderGraph(model).eval(),
        (image,),
        path,
        input_names=["image"],
        output_names=["pred_embeds", "pred_masks", "clip_embeds", "clip_dense"],
        dynamic_shapes={"image": {2: 32 * units_h, 3: 32 * units_w}},
        opset=opset,
    )


def export_classifier(model, path: Path, *, opset=DEFAULT_OPSET):
    """Write ``classifier.onnx`` with dynamic numbers of classes and synonyms (and a dynamic
    dense map size when the text reads the image)."""
    queries, dim = model.transformer_decoder.query_feat.num_embeddings, model.backbone.embed_dim
    # 3 classes over 5 synonyms, padded with row 5 + 1 (the -inf column).
    text = torch.nn.functional.normalize(torch.randn(5, dim), dim=-1)
    index = torch.tensor([[0, 1, 6], [2, 6, 6], [3, 4, 6]])
    seen = torch.tensor([True, False, True])
    k = torch.export.Dim("classes", min=1, max=100_000)
    s = torch.export.Dim("synonyms", min=1, max=1_000_000)
    m = torch.export.Dim("max_synonyms", min=1, max=1000)
    args = (torch.randn(1, queries, dim), torch.randn(1, queries, dim), text, index, seen)
    names = ["pred_embeds", "clip_embeds", "text", "synonym_index", "seen"]
    dynamic = {
        "pred_embeds": None,
        "clip_embeds": None,
        "text": {0: s},
        "synonym_index": {0: k, 1: m},
        "seen": {0: k},
    }
    if reads_image_for_text(model):
        args += (torch.randn(1, model.backbone.dense_channels, 4, 6),)
        names.append("clip_dense")
        dynamic["clip_dense"] = {
            2: torch.export.Dim("dense_height", min=2, max=MAX_SIDE_UNITS),
            3: torch.export.Dim("dense_width", min=2, max=MAX_SIDE_UNITS),
        }
    _onnx_export(
        ClassifierGraph(model).eval(),
        args,
        path,
        input_names=names,
        output_names=["class_logits", "in_vocab_logits", "out_vocab_logits"],
        dynamic_shapes=dynamic,
        opset=opset,
    )


def export_text_encoder(model, path: Path, *, opset=DEFAULT_OPSET):
    """Write ``text_encoder.onnx`` with dynamic numbers of texts and token length."""
    context = model.backbone.text_context_length
    tokens = torch.zeros(3, 12, dtype=torch.long)
    tokens[:, 0] = 49406
    tokens[:, 1:4] = torch.randint(1, 49000, (3, 3))
    tokens[:, 4] = 49407
    n = torch.export.Dim("texts", min=1, max=1_000_000)
    length = torch.export.Dim("tokens", min=2, max=context)
    _onnx_export(
        TextEncoderGraph(model).eval(),
        (tokens,),
        path,
        input_names=["tokens"],
        output_names=["text_embeddings"],
        dynamic_shapes={"tokens": {0: n, 1: length}},
        opset=opset,
    )


def _max_differences(session, feeds: dict, expected: list[torch.Tensor]) -> list[float]:
    outputs = session.run(None, {k: v.numpy() for k, v in feeds.items()})
    return [
        float(np.abs(out - ref.numpy()).max()) if ref.numel() else 0.0
        for out, ref in zip(outputs, expected, strict=True)
    ]


def check_export(model, folder: Path, *, check_hw=(192, 288), threads: int = 1) -> dict:
    """Run the written graphs with ONNX Runtime on a random image of another size than the
    export's and random text; the largest absolute difference from PyTorch per output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3

    def session(name):
        return ort.InferenceSession(
            str(folder / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
        )

    torch.manual_seed(0)
    image = torch.randn(1, 3, *check_hw)
    with torch.no_grad():
        image_out = ImageEncoderGraph(model)(image)
        report = {"image_size": list(check_hw)}
        names = ["pred_embeds", "pred_masks", "clip_embeds", "clip_dense"]
        diffs = _max_differences(session("image_encoder"), {"image": image}, list(image_out))
        report.update(dict(zip(names, diffs, strict=True)))
        dim = model.backbone.embed_dim
        text = torch.nn.functional.normalize(torch.randn(7, dim), dim=-1)
        index = torch.tensor([[0, 8], [1, 2], [3, 8], [4, 8], [5, 6], [7, 8]])
        seen = torch.tensor([True, False, True, True, False, False])
        feeds = {
            "pred_embeds": image_out[0],
            "clip_embeds": image_out[2],
            "text": text,
            "synonym_index": index,
            "seen": seen,
        }
        if reads_image_for_text(model):
            feeds["clip_dense"] = image_out[3]
        expected = ClassifierGraph(model)(*feeds.values())
        diffs = _max_differences(session("classifier"), feeds, list(expected))
        names = ["class_logits", "in_vocab_logits", "out_vocab_logits"]
        report.update(dict(zip(names, diffs, strict=True)))
        if (folder / "text_encoder.onnx").is_file():
            texts = ["a photo of a red star.", "grass", "a cat"]
            if learned_context(model):
                texts = model.text_context.context.prompts(texts)
            tokens = model.backbone.tokenize(texts)
            tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]
            expected = TextEncoderGraph(model)(tokens)
            report["text_embeddings"] = _max_differences(
                session("text_encoder"), {"tokens": tokens}, [expected]
            )[0]
    return report


def export_settings(predictor) -> dict:
    """What the runtime needs besides the graphs: pre- and post-processing, text prompting,
    the training vocabulary (seen classes), the model's name and sizes."""
    cfg, model = predictor.cfg, predictor.model
    inference = cfg.inference
    train = predictor.train_vocabulary
    return {
        "format_version": FORMAT_VERSION,
        "model": predictor.model_name,
        "clip_model_name": model.backbone.model_name,
        "num_queries": model.transformer_decoder.query_feat.num_embeddings,
        "embed_dim": model.backbone.embed_dim,
        "text_context_length": model.backbone.text_context_length,
        "inference": {
            "min_size_test": inference.min_size_test,
            "max_size_test": inference.max_size_test,
            "size_divisibility": inference.size_divisibility,
            "pixel_mean": list(inference.pixel_mean),
            "pixel_std": list(inference.pixel_std),
            "object_mask_threshold": inference.object_mask_threshold,
            "overlap_threshold": inference.overlap_threshold,
            "detections_per_image": inference.detections_per_image,
            "out_vocab_weight_seen": model.alpha,
            "out_vocab_weight_unseen": model.beta,
        },
        # A learned context replaces the templates: one prompt of N placeholder tokens, which
        # the text encoder graph swaps for the context vectors.
        "templates": (
            model.text_context.context.prompts(["{}"])
            if learned_context(model)
            else list(predictor.text_encoder.templates)
        ),
        "learned_context": learned_context(model),
        "text_reads_image": reads_image_for_text(model),
        "train_vocabulary": {
            "name": train.name,
            "classes": [list(c) for c in train.classes],
            "is_thing": list(train.is_thing),
        },
    }


def check_exportable(predictor) -> None:
    """ExportError for what the graphs cannot carry."""
    if predictor.precision.precision != "fp32":
        raise ExportError("export runs on the fp32 model: load it with precision='fp32'")


def _replace_folder(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` folder to ``out``, replacing an earlier export there."""
    if out.exists():
        old = out.with_name(out.name + f".old-{os.getpid()}")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)


def export_onnx(
    predictor,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    text_encoder: bool = True,
    example_hw: tuple[int, int] = (256, 320),
    check: bool = True,
    tolerance: float = 1e-3,
    progress: bool = True,
) -> dict:
    """Export ``predictor``'s model (an :class:`ovseg.predictor.OVSegPredictor`) to ``out``.

    The folder is built beside ``out`` and moved in place when complete (an existing export
    there is replaced; any other non-empty folder is refused). With ``check``, ONNX Runtime
    runs the written graphs on another image size and random text, and a difference from
    PyTorch above ``tolerance`` is an ExportError (nothing is written). Returns the
    ``export.json`` settings, with the check's differences under ``check``.
    A model's text context (:mod:`ovseg.modeling.text_context`) is carried: learned context
    in the text encoder graph, the visual-context decoder and CDT in the classifier graph.
    Raises ExportError for an opset below 17, a model not in fp32, or an ``out`` that is a
    file or a foreign folder.
    """
    out = Path(out)
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: use {MIN_OPSET} or newer")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_export(out))):
        raise ExportError(f"{out} exists and is not an ovseg export: choose a new or empty folder")
    check_exportable(predictor)
    model = predictor.model.float().eval()
    settings = export_settings(predictor)
    settings["opset"] = opset
    settings["torch_version"] = torch.__version__
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        steps = [("image_encoder", export_image_encoder), ("classifier", export_classifier)]
        if text_encoder:
            steps.append(("text_encoder", export_text_encoder))
        for name, write in steps:
            if progress:
                print(f"export: {name}.onnx ...", file=sys.stderr, flush=True)
            kwargs = {"example_hw": example_hw} if name == "image_encoder" else {}
            write(model, staging / f"{name}.onnx", opset=opset, **kwargs)
        settings["graphs"] = [name for name, _ in steps]
        if check:
            report = check_export(model, staging)
            settings["check"] = report
            worst = max(v for k, v in report.items() if k != "image_size")
            if not worst <= tolerance:  # NaN fails too
                raise ExportError(
                    f"ONNX Runtime differs from PyTorch by {worst:.3g} (> {tolerance}): "
                    f"{report}; please report this with your model and versions"
                )
        (staging / "export.json").write_text(json.dumps(settings, indent=1))
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return settings


def _is_export(folder: Path) -> bool:
    return (folder / "export.json").is_file()
