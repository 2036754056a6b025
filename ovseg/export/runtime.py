"""Run an ``ovseg export`` folder with ONNX Runtime: the same result dict as
:class:`ovseg.predictor.OVSegPredictor` (the same pre-processing, the same post-processing
code), with any vocabulary. The networks run in ONNX Runtime; resizing, padding and
post-processing are ovseg's own (they use PyTorch's CPU ops)."""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.export.onnx_export import FORMAT_VERSION, ExportError
from ovseg.modeling.backbone import tokenize
from ovseg.modeling.text_classifier import TextClassifier
from ovseg.predictor import TASKS, ImageFeatures, _check_tasks, segment_outputs
from ovseg.preprocess import as_rgb_array, normalize_and_pad, resize_image, shortest_edge_size
from ovseg.vocabulary import Vocabulary, VocabularyLike, as_vocabulary, seen_class_mask


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
    settings = json.loads(path.read_text())
    if settings.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path} has export format {settings.get('format_version')}, this ovseg reads "
            f"{FORMAT_VERSION}: export the model again with this version"
        )
    for name in ("image_encoder", "classifier"):
        if not (folder / f"{name}.onnx").is_file():
            raise ExportError(f"{folder / (name + '.onnx')} is missing: export the model again")
    return settings


class OnnxPredictor:
    """An export folder's graphs in ONNX Runtime, used like ``OVSegPredictor``:

        predictor = OnnxPredictor("exports/synthetic_tiny")
        result = predictor.predict("scene.png", vocabulary=["star", "grass"])

    ``threads``: ONNX Runtime's intra-op threads (None: its default); ``providers``: its
    execution providers (default CPU). ``text_embeddings=`` in :meth:`set_vocabulary` takes
    precomputed (S, D) synonym embeddings when the export has no text encoder.
    """

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

        self.folder = Path(folder)
        self.settings = read_export(self.folder)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]
        self.sessions = {
            name: ort.InferenceSession(
                str(self.folder / f"{name}.onnx"), options, providers=providers
            )
            for name in self.settings.get("graphs", ["image_encoder", "classifier"])
        }
        self.inference = _Inference(self.settings["inference"])
        train = self.settings["train_vocabulary"]
        self.train_vocabulary = Vocabulary(
            classes=tuple(tuple(c) for c in train["classes"]),
            is_thing=tuple(train["is_thing"]),
            name=train["name"],
        )
        self.templates = list(self.settings["templates"])
        self.model_name = self.settings["model"]  # the exported model (records, caveats)
        self.device = torch.device("cpu")
        self.feature_cache_size = feature_cache_size
        self.max_output_pixels = max_output_pixels
        self._features: OrderedDict[str, ImageFeatures] = OrderedDict()
        self.vocabulary: Vocabulary | None = None
        self._classifier: TextClassifier | None = None
        self._seen: torch.Tensor | None = None
        self.image_encodes = 0

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
        """As :meth:`ovseg.predictor.OVSegPredictor.set_vocabulary`; ``text_embeddings``
        (S, D), one L2-normalised row per synonym in class order, skips the text encoder."""
        vocab = as_vocabulary(vocabulary).with_kinds_from(self.train_vocabulary)
        if text_embeddings is not None:
            embeddings = torch.as_tensor(np.asarray(text_embeddings, dtype=np.float32))
            expected = (len(vocab.synonyms), self.settings["embed_dim"])
            if tuple(embeddings.shape) != expected:
                raise ValueError(
                    f"text_embeddings must be {expected} (one row per synonym), got "
                    f"{tuple(embeddings.shape)}"
                )
        elif vocab == self.vocabulary:
            return vocab
        else:
            embeddings = self.encode_texts(vocab.synonyms)
        self._classifier = TextClassifier(embeddings, vocab.num_synonyms)
        self._seen = torch.tensor(seen_class_mask(vocab, self.train_vocabulary))
        self.vocabulary = vocab
        return vocab

    @property
    def seen(self) -> list[bool]:
        if self._seen is None:
            raise ValueError("no vocabulary: call set_vocabulary first")
        return [bool(s) for s in self._seen.tolist()]

    # ---------------------------------------------------------------- image
    def network_input_size(
        self, height: int, width: int, short_side: int | None = None
    ) -> tuple[int, int]:
        inf = self.inference
        return shortest_edge_size(height, width, short_side or inf.min_size_test, inf.max_size_test)

    def encode(self, image, *, short_side: int | None = None) -> ImageFeatures:
        """The image graph once per image and size (cached like ``OVSegPredictor.encode``)."""
        array = as_rgb_array(image)
        resized_hw = self.network_input_size(*array.shape[:2], short_side)
        key = hashlib.sha1(array.tobytes()).hexdigest() + f"{array.shape}{resized_hw}"
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        inf = self.inference
        pixels = normalize_and_pad(
            [resize_image(array, resized_hw)], inf.pixel_mean, inf.pixel_std, inf.size_divisibility
        )
        outputs = self.sessions["image_encoder"].run(None, {"image": pixels.numpy()})
        pred_embeds, pred_masks, clip_embeds, clip_dense = (torch.from_numpy(o) for o in outputs)
        self.image_encodes += 1
        features = ImageFeatures(
            pred_embeds=pred_embeds,
            clip_embeds=clip_embeds,
            pred_masks=pred_masks,
            clip_dense=clip_dense,
            image_size=tuple(array.shape[:2]),
            resized_hw=resized_hw,
            padded_hw=tuple(pixels.shape[-2:]),
        )
        if self.feature_cache_size > 0:
            self._features[key] = features
            while len(self._features) > self.feature_cache_size:
                self._features.popitem(last=False)
        return features

    def clear_cache(self) -> None:
        """Forget the cached image features."""
        self._features.clear()

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if height * width <= self.max_output_pixels:
            return height, width
        scale = math.sqrt(self.max_output_pixels / (height * width))
        return max(1, int(height * scale)), max(1, int(width * scale))

    # ---------------------------------------------------------------- prediction
    def class_logits(self, features: ImageFeatures) -> dict[str, torch.Tensor]:
        """The classifier graph on an image's features: ensemble, in_vocab and out_vocab
        logits, each (Q, K+1)."""
        if self._classifier is None:
            raise ValueError("no vocabulary: pass vocabulary=... (class names or a vocab name)")
        feeds = {
            "pred_embeds": features.pred_embeds.numpy(),
            "clip_embeds": features.clip_embeds.numpy(),
            "text": self._classifier.embeddings.numpy().astype(np.float32),
            "synonym_index": self._classifier.synonym_index.numpy().astype(np.int64),
            "seen": self._seen.numpy().astype(bool),
        }
        outputs = self.sessions["classifier"].run(None, feeds)
        names = ("ensemble", "in_vocab", "out_vocab")
        return {n: torch.from_numpy(o[0]) for n, o in zip(names, outputs, strict=True)}

    def segment(
        self,
        features: ImageFeatures,
        *,
        vocabulary: VocabularyLike | None = None,
        tasks: tuple[str, ...] | str = TASKS,
    ) -> dict:
        """As :meth:`ovseg.predictor.OVSegPredictor.segment` (the same post-processing)."""
        tasks = _check_tasks(tasks)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        class_logits = self.class_logits(features)["ensemble"]
        out_hw = self.output_size(*features.image_size)
        return segment_outputs(
            features, class_logits, self.vocabulary, self.inference, out_hw, tasks
        )

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
        tasks = _check_tasks(tasks)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        if self._classifier is None:
            raise ValueError("no vocabulary: pass vocabulary=... (class names or a vocab name)")
        return self.segment(self.encode(image, short_side=short_side), tasks=tasks)

    def predict_batch(self, images, **kwargs) -> list[dict]:
        return [self.predict(image, **kwargs) for image in images]
