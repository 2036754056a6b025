"""Run an ``ovseg export`` folder with ONNX Runtime: the same result dict as
:class:`ovseg.predictor.OVSegPredictor` (the same pre-processing, the same post-processing
code), with any vocabulary. The networks run in ONNX Runtime; resizing, padding and
post-processing are ovseg's own (they use PyTorch's CPU ops)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.export.onnx_export import FORMAT_VERSION, ExportError
from ovseg.modeling.backbone import tokenize
from ovseg.modeling.text_classifier import TextClassifier
from ovseg.predictor_base import TASKS, ImageFeatures, PredictorBase, check_tasks
from ovseg.vocabulary import Vocabulary, VocabularyLike, as_vocabulary


class _Inference:
    """The export's inference settings with :class:`ovseg.config.InferenceConfig`'s names."""

    def __init__(self, values: dict) -> None:
        self.__dict__.update(values)


def read_export(folder: str | Path) -> dict:
    """``export.json`` of an export folder; ExportError naming what is missing."""
    folder = Path(folder)
    path = folder / "export.json"
    if not path.is_file():
        raise ExportError(f"{folder} is not an ovseg export (no export.json): run ovseg export")
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{path} is not valid JSON ({error}): export the model again") from None
    if settings.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path} has export format {settings.get('format_version')}, this ovseg reads "
            f"{FORMAT_VERSION}: export the model again with this version"
        )
    for name in ("image_encoder", "classifier"):
        if not (folder / f"{name}.onnx").is_file():
            raise ExportError(f"{folder / (name + '.onnx')} is missing: export the model again")
    return settings


def _session(ort, path: Path, options, providers: list[str]):
    """ONNX Runtime's session for the graph at ``path``; ExportError (one line) for a graph it
    cannot load (truncated, corrupt, or from an ONNX Runtime it does not know)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    load_errors = (
        ort_errors.Fail,
        ort_errors.InvalidArgument,
        ort_errors.InvalidProtobuf,
        ort_errors.InvalidGraph,
        ort_errors.NoSuchFile,
        ort_errors.NotImplemented,
        ort_errors.RuntimeException,
    )
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except load_errors as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportError(
            f"{path} cannot be loaded by ONNX Runtime ({reason}): export the model again"
        ) from None


class OnnxPredictor(PredictorBase):
    """An export folder's graphs in ONNX Runtime, used like ``OVSegPredictor`` (the same
    vocabulary handling, feature cache, pre- and post-processing: :class:`PredictorBase`):

        predictor = OnnxPredictor("exports/synthetic_tiny")
        result = predictor.predict("scene.png", vocabulary=["star", "grass"])

    ``threads``: ONNX Runtime's intra-op threads (None: its default); ``providers``: its
    execution providers (default CPU). ``text_embeddings=`` in :meth:`set_vocabulary` takes
    precomputed (S, D) synonym embeddings when the export has no text encoder.
    """

    batches_images = False  # the image graph is exported for one image at a time

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        feature_cache_size: int = 4,
        max_output_pixels: int = 2048 * 1024,
    ) -> None:
        import onnxruntime as ort

        folder = Path(folder)
        settings = read_export(folder)
        train = settings["train_vocabulary"]
        super().__init__(
            Vocabulary(
                classes=tuple(tuple(c) for c in train["classes"]),
                is_thing=tuple(train["is_thing"]),
                name=train["name"],
            ),
            device=torch.device("cpu"),
            feature_cache_size=feature_cache_size,
            max_output_pixels=max_output_pixels,
        )
        self.folder = folder
        self.settings = settings
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]
        self.sessions = {
            name: _session(ort, folder / f"{name}.onnx", options, providers)
            for name in settings.get("graphs", ["image_encoder", "classifier"])
        }
        self._inference = _Inference(settings["inference"])
        self.templates = list(settings["templates"])
        self.model_name = settings["model"]  # the exported model (records, caveats)

    # ---------------------------------------------------------------- PredictorBase parts
    @property
    def inference(self):
        return self._inference

    def _text_classifier(self, vocab: Vocabulary) -> TextClassifier:
        return TextClassifier(self.encode_texts(vocab.synonyms), vocab.num_synonyms)

    def _image_network(self, pixels: torch.Tensor) -> dict:
        outputs = self.sessions["image_encoder"].run(None, {"image": pixels.cpu().numpy()})
        names = ("pred_embeds", "pred_masks", "clip_embeds", "clip_dense")
        tensors = {n: torch.from_numpy(o) for n, o in zip(names, outputs, strict=True)}
        return {**tensors, "prompt_embedding": None}

    def _class_logits(
        self, features: ImageFeatures, *, alpha: float | None = None, beta: float | None = None
    ) -> torch.Tensor:
        logits = self.class_logits(features)
        if alpha is None and beta is None:
            return logits["ensemble"]  # the exported graph's, with the model's weights
        from ovseg.modeling.ensemble import geometric_ensemble

        weights = self.settings["inference"]
        return geometric_ensemble(
            logits["in_vocab"],
            logits["out_vocab"],
            self._seen,
            alpha=weights["out_vocab_weight_seen"] if alpha is None else alpha,
            beta=weights["out_vocab_weight_unseen"] if beta is None else beta,
        )

    # ---------------------------------------------------------------- text
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (N, D) L2-normalised embeddings, each the mean over the prompt templates
        of the normalised prompt embeddings (as :class:`ovseg.modeling.text_classifier.
        TextEncoder`), from ``text_encoder.onnx``. ExportError when it was not exported."""
        session = self.sessions.get("text_encoder")
        if session is None:
            raise ExportError(
                f"{self.folder} has no text_encoder.onnx: pass text_embeddings=, or export "
                "without --no-text-encoder"
            )
        prompts = [template.format(t) for t in texts for template in self.templates]
        tokens = tokenize(
            self.settings["clip_model_name"], prompts, self.settings["text_context_length"]
        )
        tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]  # causal: the rest is unused
        embeddings = []
        for start in range(0, len(tokens), 256):
            batch = tokens[start : start + 256].numpy().astype(np.int64)
            embeddings.append(session.run(None, {"tokens": batch})[0])
        per_prompt = torch.from_numpy(np.concatenate(embeddings))
        per_text = per_prompt.reshape(len(texts), len(self.templates), -1).mean(dim=1)
        return F.normalize(per_text, dim=-1)

    def set_vocabulary(
        self, vocabulary: VocabularyLike, *, text_embeddings: np.ndarray | None = None
    ) -> Vocabulary:
        """As :meth:`PredictorBase.set_vocabulary`; ``text_embeddings`` (S, D), one
        L2-normalised row per synonym in class order, replaces the text encoder."""
        if text_embeddings is None:
            return super().set_vocabulary(vocabulary)
        vocab = as_vocabulary(vocabulary).with_kinds_from(self.train_vocabulary)
        embeddings = torch.as_tensor(np.asarray(text_embeddings, dtype=np.float32))
        expected = (len(vocab.synonyms), self.settings["embed_dim"])
        if tuple(embeddings.shape) != expected:
            raise ValueError(
                f"text_embeddings must be {expected} (one row per synonym), got "
                f"{tuple(embeddings.shape)}"
            )
        self._use_vocabulary(vocab, TextClassifier(embeddings, vocab.num_synonyms))
        return vocab

    # ---------------------------------------------------------------- prediction
    def class_logits(self, features: ImageFeatures) -> dict[str, torch.Tensor]:
        """The classifier graph on an image's features: ensemble, in_vocab and out_vocab
        logits, each (Q, K+1)."""
        self._require_vocabulary()
        feeds = {
            "pred_embeds": features.pred_embeds.numpy(),
            "clip_embeds": features.clip_embeds.numpy(),
            "text": self._classifier.embeddings.numpy().astype(np.float32),
            "synonym_index": self._classifier.synonym_index.numpy().astype(np.int64),
            "seen": self._seen.numpy().astype(bool),
        }
        if self.settings.get("text_reads_image"):  # the text adapts to the image
            feeds["clip_dense"] = features.clip_dense.numpy()
        outputs = self.sessions["classifier"].run(None, feeds)
        names = ("ensemble", "in_vocab", "out_vocab")
        return {n: torch.from_numpy(o[0]) for n, o in zip(names, outputs, strict=True)}

    @torch.no_grad()
    def predict(
        self,
        image,
        *,
        vocabulary: VocabularyLike | None = None,
        tasks: tuple[str, ...] | str = TASKS,
        short_side: int | None = None,
        head: str = "fcclip",
    ) -> dict:
        """As :meth:`ovseg.predictor.OVSegPredictor.predict` with the model's own masks
        (``head`` "fcclip"; the pixel-text head is not exported: ValueError)."""
        if head != "fcclip":
            raise ValueError(f"head '{head}' is not in the ONNX export: use the PyTorch model")
        tasks = check_tasks(tasks)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self._require_vocabulary()
        return self.segment(self.encode(image, short_side=short_side), tasks=tasks)
