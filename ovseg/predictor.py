"""OVSegPredictor: image(s) + vocabulary in, per-image segmentation results out.

Owns preprocessing (official resize / normalise / pad), the text classifier and its caches,
a cache of vocabulary-independent image features, and post-processing back to the original
image size. Changing the vocabulary on a cached image reruns only classification and
post-processing.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovseg import model_zoo
from ovseg.checkpoint import load_weights
from ovseg.config import ModelConfig, load_config
from ovseg.modeling import postprocess
from ovseg.modeling.fcclip import FCCLIP, build_model
from ovseg.modeling.text_classifier import TextClassifier, TextEncoder
from ovseg.preprocess import as_rgb_array, normalize_and_pad, resize_image, shortest_edge_size
from ovseg.vocabulary import (
    Vocabulary,
    load_templates,
    load_vocabulary,
    parse_class_list,
    seen_class_mask,
)

TASKS = ("panoptic", "semantic", "instance")


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA GPU is available: use cpu")
    return device


def as_vocabulary(vocabulary: Vocabulary | str | list[str]) -> Vocabulary:
    """A Vocabulary, a shipped vocabulary name / file path, or a list of class names."""
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    if isinstance(vocabulary, (list, tuple)):
        return parse_class_list(", ".join(vocabulary))
    return load_vocabulary(vocabulary)


class OVSegPredictor:
    def __init__(
        self,
        model: FCCLIP,
        cfg: ModelConfig,
        *,
        device: str | torch.device | None = "cpu",
        dtype: torch.dtype = torch.float32,
        text_cache_dir: str | Path | None = None,
        feature_cache_size: int = 4,
        max_output_pixels: int = 2048 * 1024,
        use_disk_text_cache: bool = True,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(device)
        self.dtype = dtype
        self.model = model.to(self.device).eval()
        self.text_encoder = TextEncoder(
            model.backbone,
            load_templates(cfg.text.templates),
            batch_size=cfg.text.batch_size,
            cache_dir=text_cache_dir,
            use_disk_cache=use_disk_text_cache,
        )
        self.train_vocabulary = load_vocabulary(cfg.text.train_vocabulary)
        self.feature_cache_size = feature_cache_size
        self.max_output_pixels = max_output_pixels
        self._features: OrderedDict[str, dict] = OrderedDict()
        self.image_encodes = 0  # how many times the image network ran (tests, benchmarks)
        self.model_name = cfg.name  # the zoo name or weights file, for records
        self.vocabulary: Vocabulary | None = None
        self._classifier: TextClassifier | None = None
        self._seen: torch.Tensor | None = None

    @classmethod
    def from_pretrained(
        cls,
        model: str = model_zoo.DEFAULT_MODEL,
        *,
        weights: str | Path | None = None,
        config: str | Path | None = None,
        **kwargs,
    ) -> OVSegPredictor:
        """Build a zoo model (or ``config`` + ``weights``) and load its weights. Never runs on
        random weights: missing weights raise FileNotFoundError saying where to put them."""
        explicit_weights = weights
        if weights is None:
            weights = model_zoo.local_weights(model)
            if weights is None:
                raise FileNotFoundError(model_zoo.missing_weights_message(model))
        cfg = load_config(config or model_zoo.get_entry(model).config)
        net = build_model(cfg)
        load_weights(net, weights)
        predictor = cls(net, cfg, **kwargs)
        predictor.model_name = str(explicit_weights) if explicit_weights else model
        return predictor

    # ---------------------------------------------------------------- vocabulary
    def set_vocabulary(self, vocabulary: Vocabulary | str | list[str]) -> Vocabulary:
        """Encode the vocabulary's text classifier (cached) and decide seen/unseen classes."""
        vocab = as_vocabulary(vocabulary)
        if vocab != self.vocabulary:
            self._classifier = self.text_encoder(vocab).to(self.device)
            self._seen = torch.tensor(
                seen_class_mask(vocab, self.train_vocabulary), device=self.device
            )
            self.vocabulary = vocab
        return vocab

    # ---------------------------------------------------------------- image features
    def _encode(self, image: np.ndarray, resized_hw: tuple[int, int]) -> dict:
        key = hashlib.sha1(image.tobytes()).hexdigest() + f"{image.shape}{resized_hw}"
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        resized = resize_image(image, resized_hw)
        pixels = normalize_and_pad(
            [resized],
            self.cfg.inference.pixel_mean,
            self.cfg.inference.pixel_std,
            self.cfg.inference.size_divisibility,
            device=self.device,
        )
        autocast = torch.autocast(
            self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )
        with torch.no_grad(), autocast:
            outputs = self.model.encode_image(pixels, aux_classes=False)
        self.image_encodes += 1
        entry = {
            "pred_embeds": outputs["pred_embeds"].float(),
            "clip_embeds": outputs["clip_embeds"].float(),
            "pred_masks": outputs["pred_masks"].float(),
            "padded_hw": tuple(pixels.shape[-2:]),
        }
        self._features[key] = entry
        while len(self._features) > self.feature_cache_size:
            self._features.popitem(last=False)
        return entry

    def clear_cache(self) -> None:
        self._features.clear()

    # ---------------------------------------------------------------- prediction
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The original size, or a downscaled one above ``max_output_pixels``."""
        if height * width <= self.max_output_pixels:
            return height, width
        scale = math.sqrt(self.max_output_pixels / (height * width))
        return max(1, int(height * scale)), max(1, int(width * scale))

    @torch.no_grad()
    def predict(
        self,
        image,
        *,
        vocabulary: Vocabulary | str | list[str] | None = None,
        tasks: tuple[str, ...] | str = TASKS,
        short_side: int | None = None,
    ) -> dict:
        """Segment one image.

        Args:
            image: a path, PIL image or (H, W[, C]) array.
            vocabulary: classes to find (kept for later calls); required on the first call.
            tasks: any of "panoptic", "semantic", "instance".
            short_side: test resize of the short side (default: the config's).
        Returns:
            dict with ``image_size`` (H, W), ``output_size`` (the original size unless above
            ``max_output_pixels``), ``vocabulary``, and per task: ``sem_seg`` (K, h, w) class
            scores; ``panoptic_seg`` (h, w) int32 and ``segments_info`` [{id, isthing,
            category_id, score}]; ``instances`` {masks (N, h, w) bool, boxes (N, 4) x0 y0 x1 y1,
            scores (N,), labels (N,)}; and ``class_logits`` (Q, K+1), ``mask_logits`` (Q, h/4..).
        """
        tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"unknown task {unknown}: choose from {', '.join(TASKS)}")
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        if self._classifier is None:
            raise ValueError("no vocabulary: pass vocabulary=... (class names or a vocab name)")
        array = as_rgb_array(image)
        height, width = array.shape[:2]
        inf = self.cfg.inference
        resized_hw = shortest_edge_size(
            height, width, short_side or inf.min_size_test, inf.max_size_test
        )
        features = self._encode(array, resized_hw)
        return self.postprocess(features, (height, width), resized_hw, tasks)

    @torch.no_grad()
    def postprocess(
        self,
        features: dict,
        image_size: tuple[int, int],
        resized_hw: tuple[int, int],
        tasks: tuple[str, ...],
    ) -> dict:
        """Classify cached image features with the current vocabulary and turn them into the
        results of :meth:`predict` (the only work a vocabulary switch costs)."""
        inf = self.cfg.inference
        logits = self.model.classify(features, self._classifier, self._seen)
        class_logits = logits["ensemble"][0]
        masks = F.interpolate(
            features["pred_masks"], size=features["padded_hw"], mode="bilinear", align_corners=False
        )[0]
        out_hw = self.output_size(*image_size)
        is_thing = torch.tensor(self.vocabulary.is_thing, device=self.device)
        result = {
            "image_size": tuple(image_size),
            "output_size": out_hw,
            "vocabulary": self.vocabulary,
            "class_logits": class_logits,
            "mask_logits": features["pred_masks"][0],
        }
        if tasks == ("semantic",):
            # Semantic-only configs score at padded resolution, then crop and resize.
            scores = postprocess.semantic_inference(class_logits, masks)
            result["sem_seg"] = postprocess.resize_to_original(scores, resized_hw, out_hw)
            return result
        masks = postprocess.resize_to_original(masks, resized_hw, out_hw)
        if "semantic" in tasks:
            result["sem_seg"] = postprocess.semantic_inference(class_logits, masks)
        if "panoptic" in tasks:
            panoptic, segments = postprocess.panoptic_inference(
                class_logits,
                masks,
                is_thing,
                object_mask_threshold=inf.object_mask_threshold,
                overlap_threshold=inf.overlap_threshold,
            )
            result["panoptic_seg"], result["segments_info"] = panoptic, segments
        if "instance" in tasks:
            result["instances"] = postprocess.instance_inference(
                class_logits, masks, is_thing, detections_per_image=inf.detections_per_image
            )
        return result

    def predict_batch(self, images, **kwargs) -> list[dict]:
        return [self.predict(image, **kwargs) for image in images]


def add_model_arguments(parser, *, default: str = "auto") -> None:
    """--model / --weights / --config / --device, shared by the command-line tools."""
    from ovseg import model_zoo

    choices = ", ".join(model_zoo.MODEL_ZOO)
    parser.add_argument(
        "--model",
        default=default,
        help=f"zoo model: {choices}"
        + (
            "; 'auto': the real FC-CLIP model if its weights are present, else the shipped "
            "synthetic_tiny (said on stderr)"
            if default == "auto"
            else ""
        )
        + f" (default: {default})",
    )
    parser.add_argument("--weights", help="weights file (ovseg .safetensors or official .pth)")
    parser.add_argument("--config", help="config preset or YAML to go with --weights")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")


def load_predictor(
    model: str = "auto", *, weights=None, config=None, device=None, log=print, **kwargs
) -> OVSegPredictor:
    """The CLI and demo's way in. ``model="auto"``: the real model when its weights are on this
    machine, else the shipped tiny model, said plainly."""
    if weights is None and model == "auto":
        if model_zoo.local_weights(model_zoo.DEFAULT_MODEL) is not None:
            model = model_zoo.DEFAULT_MODEL
        else:
            model = model_zoo.fallback_model()
            log(
                f"ovseg: weights of {model_zoo.DEFAULT_MODEL} not found "
                f"({model_zoo.missing_weights_message(model_zoo.DEFAULT_MODEL)}); "
                f"using {model}: {model_zoo.get_entry(model).description}",
                file=sys.stderr,
            )
    if model == "auto":
        model = model_zoo.DEFAULT_MODEL
    return OVSegPredictor.from_pretrained(
        model, weights=weights, config=config, device=device, **kwargs
    )
