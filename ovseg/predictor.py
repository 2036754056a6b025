"""OVSegPredictor: image(s) + vocabulary in, per-image segmentation results out.

Owns preprocessing (official resize / normalise / pad), the text classifier and its caches,
a cache of vocabulary-independent image features, and post-processing back to the original
image size. The two steps are public, in the spirit of segment-anything's ``set_image``:

    features = predictor.encode(image)                      # the image network, once
    result = predictor.segment(features, vocabulary=["cat", "sky"], tasks="panoptic")
    result = predictor.segment(features, vocabulary="ade150")  # classification only

``predict(image, vocabulary=...)`` does both, with a small cache of recent images' features.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovseg import model_zoo
from ovseg.checkpoint import has_clip, load_weights, read_state_dict
from ovseg.config import ModelConfig, load_config
from ovseg.modeling import postprocess
from ovseg.modeling.fcclip import FCCLIP, build_model
from ovseg.modeling.text_classifier import TextClassifier, TextEncoder
from ovseg.precision import choose_precision, mlp_probe_shape, quantize_int8
from ovseg.preprocess import as_rgb_array, normalize_and_pad, resize_image, shortest_edge_size
from ovseg.vocabulary import (
    Vocabulary,
    VocabularyLike,
    as_vocabulary,
    load_templates,
    load_vocabulary,
    seen_class_mask,
)

TASKS = ("panoptic", "semantic", "instance")
RESIZE_CHUNK = 16  # queries resized to the output size at a time in post-processing


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> cuda when available, else cpu. Raises ValueError for a device ovseg does not
    run on (only cpu and cuda[:N]), RuntimeError for cuda without a GPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{device}': use cpu or cuda (cuda:N for GPU N)")
    device = parsed
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA GPU is available: use cpu")
    return device


HEADS = ("fcclip", "pixel-text")  # predict(head=...): the model's masks, or pixel-text


@dataclass
class ImageFeatures:
    """The vocabulary-free part of one image's forward pass (:meth:`OVSegPredictor.encode`).

    pred_embeds (1, Q, D): in-vocabulary query embeddings; clip_embeds (1, Q, D): the frozen
    CLIP's mask-pooled embeddings of the queries' masks; pred_masks (1, Q, Hp/4, Wp/4): mask
    logits; clip_dense (1, C, Hp/32, Wp/32): the frozen CLIP's dense map, before its head.
    image_size (H, W): the input image; resized_hw: the network input before padding;
    padded_hw (Hp, Wp): the network input (a multiple of the size divisibility).
    prompt_embedding (1, C, Hp/16, Wp/16): the prompt head's image embedding (None without
    a prompt head).
    """

    pred_embeds: torch.Tensor
    clip_embeds: torch.Tensor
    pred_masks: torch.Tensor
    clip_dense: torch.Tensor
    image_size: tuple[int, int]
    resized_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    prompt_embedding: torch.Tensor | None = None


class OVSegPredictor:
    """Images + vocabulary in, results out (see the module docstring).

    ``precision``: "fp32" (default; the exact path, the official outputs), "bf16" / "fp16"
    (autocast), "int8" (CPU: dynamically quantized MLP and projection layers) or "auto" (the
    fastest path the hardware runs natively, measured; see :mod:`ovseg.precision`). The
    choice and its reason are in ``self.precision``; ValueError for an unknown one or int8 on
    a GPU.
    """

    def __init__(
        self,
        model: FCCLIP,
        cfg: ModelConfig,
        *,
        device: str | torch.device | None = "cpu",
        precision: str = "fp32",
        text_cache_dir: str | Path | None = None,
        feature_cache_size: int = 4,
        max_output_pixels: int = 2048 * 1024,
        use_disk_text_cache: bool = True,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        # fp32 is the exact path; see ovseg.precision for the fast ones and "auto".
        self.precision = choose_precision(
            precision, self.device, probe_shape=mlp_probe_shape(self.model)
        )
        if self.precision.precision == "int8":
            quantize_int8(self.model)
        self.text_encoder = TextEncoder(
            model.backbone,
            load_templates(cfg.text.templates),
            batch_size=cfg.text.batch_size,
            cache_dir=text_cache_dir,
            use_disk_cache=use_disk_text_cache,
            context=None if model.text_context is None else model.text_context.context,
        )
        self.train_vocabulary = load_vocabulary(cfg.text.train_vocabulary)
        self.feature_cache_size = feature_cache_size
        self.max_output_pixels = max_output_pixels
        self._features: OrderedDict[str, ImageFeatures] = OrderedDict()
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
        state = read_state_dict(weights)
        # A file saved without the CLIP (its open_clip tag can load it) gets it by the tag.
        clip_by_tag = bool(cfg.clip.pretrained) and not has_clip(state)
        net = build_model(cfg, load_clip_weights=clip_by_tag)
        load_weights(net, state, clip_loaded=clip_by_tag, source=str(weights))
        predictor = cls(net, cfg, **kwargs)
        predictor.model_name = str(explicit_weights) if explicit_weights else model
        return predictor

    # ---------------------------------------------------------------- vocabulary
    def set_vocabulary(self, vocabulary: VocabularyLike) -> Vocabulary:
        """Encode the vocabulary's text classifier (cached) and decide seen / unseen classes.

        ``vocabulary``: a :class:`Vocabulary`, a shipped name or file, or a list with one
        entry per class (see :func:`ovseg.vocabulary.as_vocabulary`). Classes whose kind was
        guessed take the kind of the model's training class of the same name. Returns the
        vocabulary in use (``self.vocabulary``).
        """
        # Kinds (thing / stuff) not given take those of the model's training classes.
        vocab = as_vocabulary(vocabulary).with_kinds_from(self.train_vocabulary)
        if vocab != self.vocabulary:
            self._classifier = self.text_encoder(vocab).to(self.device)
            self._seen = torch.tensor(
                seen_class_mask(vocab, self.train_vocabulary), device=self.device
            )
            self.vocabulary = vocab
        return vocab

    @property
    def classifier(self) -> TextClassifier:
        """The text classifier of the current vocabulary: ``embeddings`` (S, D), one
        L2-normalised row per synonym, and the synonyms per class."""
        self._require_vocabulary()
        return self._classifier

    @property
    def seen(self) -> list[bool]:
        """Per class of the current vocabulary: is it a training class (a synonym in common)?"""
        if self._seen is None:
            raise ValueError("no vocabulary: call set_vocabulary first")
        return [bool(s) for s in self._seen.tolist()]

    # ---------------------------------------------------------------- image features
    def network_input_size(
        self, height: int, width: int, short_side: int | None = None
    ) -> tuple[int, int]:
        """(h, w) the image is resized to: short side ``short_side`` (default: the config's
        test size), long side at most the config's maximum."""
        inf = self.cfg.inference
        return shortest_edge_size(height, width, short_side or inf.min_size_test, inf.max_size_test)

    @torch.no_grad()
    def encode(self, image, *, short_side: int | None = None) -> ImageFeatures:
        """Run the image network once: the vocabulary-independent :class:`ImageFeatures`.

        Args:
            image: a path, PIL image or (H, W[, C]) array (see ``preprocess.as_rgb_array``).
            short_side: test resize of the short side in pixels (default: the config's).
        The last ``feature_cache_size`` images' features are kept: the same image at the same
        size is not encoded twice.
        """
        array = as_rgb_array(image)
        resized_hw = self.network_input_size(*array.shape[:2], short_side)
        key = hashlib.sha1(array.tobytes()).hexdigest() + f"{array.shape}{resized_hw}"
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        inf = self.cfg.inference
        pixels = normalize_and_pad(
            [resize_image(array, resized_hw)],
            inf.pixel_mean,
            inf.pixel_std,
            inf.size_divisibility,
            device=self.device,
        )
        dtype = self.precision.autocast_dtype
        autocast = torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)
        with autocast:
            outputs = self.model.encode_image(pixels, aux_classes=False, aux_outputs=False)
            head = self.model.prompt_head
            prompt_embedding = None
            if head is not None:
                maps = {**outputs["features"], "mask_features": outputs["mask_features"]}
                prompt_embedding = head.embed_image(maps)
        self.image_encodes += 1
        features = ImageFeatures(
            pred_embeds=outputs["pred_embeds"].float(),
            clip_embeds=outputs["clip_embeds"].float(),
            pred_masks=outputs["pred_masks"].float(),
            clip_dense=outputs["features"]["clip_vis_dense"].float(),
            image_size=tuple(array.shape[:2]),
            resized_hw=resized_hw,
            padded_hw=tuple(pixels.shape[-2:]),
            prompt_embedding=None if prompt_embedding is None else prompt_embedding.float(),
        )
        if self.feature_cache_size > 0:
            self._features[key] = features
            while len(self._features) > self.feature_cache_size:
                self._features.popitem(last=False)
        return features

    def clear_cache(self) -> None:
        """Forget the cached image features."""
        self._features.clear()

    @torch.no_grad()
    def pool_masks(self, features: ImageFeatures, masks) -> torch.Tensor:
        """Frozen-CLIP embeddings of given masks, pooled the FC-CLIP way (mask pooling of the
        dense CLIP map, then the CLIP image head), as the out-of-vocabulary head sees a mask.
        A mask too small to cover a cell of the stride-32 map once binarised is pooled with
        soft area weights instead (:func:`ovseg.sam.labels.pool_mask_logits`).

        Args:
            masks: (N, H, W) bool array or tensor at ``features.image_size``.
        Returns:
            (N, D) float, L2-normalised (compare with text embeddings by dot product).
        """
        from ovseg.sam.labels import pool_mask_logits

        masks = torch.as_tensor(np.asarray(masks), device=self.device)
        if masks.dim() != 3 or tuple(masks.shape[-2:]) != tuple(features.image_size):
            raise ValueError(
                f"masks must be (N, H, W) at the image size {tuple(features.image_size)}, got "
                f"{tuple(masks.shape)}"
            )
        if masks.shape[0] == 0:
            return torch.zeros((0, self.model.backbone.embed_dim), device=self.device)
        resized = F.interpolate(masks[None].float(), size=features.resized_hw, mode="nearest")
        logits = torch.full((len(masks), *features.padded_hw), -1.0, device=self.device)
        logits[:, : features.resized_hw[0], : features.resized_hw[1]] = resized[0] * 2 - 1
        pooled, _ = pool_mask_logits(features.clip_dense, logits)
        return F.normalize(self.model.backbone.project_pooled(pooled[None])[0].float(), dim=-1)

    def prompt_head_masks(self, features: ImageFeatures, prompts):
        """The model's prompt head's masks for a :class:`ovseg.sam.prompts.Prompts`: a
        :class:`ovseg.sam.masks.MaskSet` at the image size (one mask per prompt object)."""
        from ovseg.sam.masks import MaskSet
        from ovseg.sam.prompt_head import predict_prompt_masks

        masks, scores = predict_prompt_masks(self.model.prompt_head, features, prompts)
        return MaskSet(masks, scores, [p.describe() for p in prompts.objects()])

    @torch.no_grad()
    def segment_masks(
        self,
        image,
        masks,
        *,
        mask_scores=None,
        vocabulary: VocabularyLike | None = None,
        tasks: tuple[str, ...] | str = TASKS,
    ) -> dict:
        """Label any masks (SAM's, a user's) with the vocabulary, the way the
        out-of-vocabulary branch labels a query mask, and build panoptic / semantic /
        instance outputs from them (see :func:`ovseg.sam.segment.segment_masks`).

        Args:
            image: a path, PIL image or (H, W[, C]) array.
            masks: (N, H, W) bool at the image size; mask_scores: (N,) in [0, 1] (default 1).
        """
        from ovseg.sam.segment import segment_masks

        tasks = _check_tasks(tasks)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self._require_vocabulary()
        return segment_masks(self, image, masks, mask_scores=mask_scores, tasks=tasks)

    @torch.no_grad()
    def segment_prompts(
        self,
        image,
        *,
        points=None,
        point_labels=None,
        boxes=None,
        prompts=None,
        vocabulary: VocabularyLike | None = None,
        sam=None,
    ) -> dict:
        """Masks for clicks and boxes, each with its open-vocabulary classes.

        Args:
            image: a path, PIL image or (H, W[, C]) array.
            points: (P, 2) x, y pixels (x the column); point_labels: (P,) 1 positive / 0
                negative (default all positive); boxes: (B, 4) x0, y0, x1, y1 pixels. Each
                box is one object; the points are one more, or refine the box when there is
                exactly one (:mod:`ovseg.sam.prompts`).
            prompts: an :class:`ovseg.sam.prompts.Prompts` instead of the three above.
            sam: a :class:`ovseg.sam.masks.SamMasks` to draw masks with; None uses the
                model's prompt head (the same image pass as :meth:`encode`).
        Returns:
            see :func:`ovseg.sam.segment.segment_prompts`: ``instances`` in prompt order and
            ``prompts`` [{"prompt", "mask_score", "top_classes"}].
        Raises :class:`ovseg.sam.prompts.PromptError` for bad prompts; ValueError with no
        vocabulary or no mask source.
        """
        from ovseg.sam.segment import segment_prompts

        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self._require_vocabulary()
        return segment_prompts(
            self,
            image,
            points=points,
            point_labels=point_labels,
            boxes=boxes,
            prompts=prompts,
            sam=sam,
        )

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
        vocabulary: VocabularyLike | None = None,
        tasks: tuple[str, ...] | str = TASKS,
        short_side: int | None = None,
        head: str = "fcclip",
    ) -> dict:
        """Segment one image: :meth:`encode` (cached) then :meth:`segment`.

        Args:
            image: a path, PIL image or (H, W[, C]) array.
            vocabulary: classes to find (kept for later calls); required on the first call.
                A list has one entry per class: ``["traffic cone/pylon", "sky"]`` is two
                classes (see :func:`ovseg.vocabulary.as_vocabulary`).
            tasks: any of "panoptic", "semantic", "instance".
            short_side: test resize of the short side (default: the config's).
            head: "fcclip" (the model's masks and classes) or "pixel-text" (semantic only:
                every location of the frozen CLIP map matched with the classes' text, the
                training-free baseline of :func:`ovseg.heatmap.pixel_text_semantic`).
        Returns:
            the dict of :meth:`segment`. ValueError for an unknown head, or "pixel-text" with
            a task other than semantic.
        """
        tasks = _check_tasks(tasks)
        if head not in HEADS:
            raise ValueError(f"unknown head '{head}': choose one of {', '.join(HEADS)}")
        if head == "pixel-text" and tasks != ("semantic",):
            raise ValueError("the pixel-text head gives semantic output only: use --task semantic")
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self._require_vocabulary()
        features = self.encode(image, short_side=short_side)
        if head == "pixel-text":
            from ovseg.heatmap import pixel_text_semantic

            return pixel_text_semantic(self, features)
        return self.segment(features, tasks=tasks)

    def heatmap(self, image, phrases, *, short_side: int | None = None) -> np.ndarray:
        """Relevancy heat maps of free-form phrases ("red car"): (P, H, W) float32 in (0, 1)
        at :meth:`output_size`, above 0.5 where a pixel matches the phrase better than the
        canonical "object / things / stuff / texture" (LERF / LangSplat relevancy of the
        frozen CLIP's per-location embeddings; :func:`ovseg.heatmap.relevancy_maps`). The
        image features are cached: more phrases cost only text. ValueError for an empty
        phrase."""
        from ovseg.heatmap import check_phrases, relevancy_maps

        phrases = check_phrases(phrases)  # before the image pass
        return relevancy_maps(self, self.encode(image, short_side=short_side), phrases)

    @torch.no_grad()
    def segment(
        self,
        features: ImageFeatures,
        *,
        vocabulary: VocabularyLike | None = None,
        tasks: tuple[str, ...] | str = TASKS,
    ) -> dict:
        """Classify an image's features with a vocabulary and post-process them: the only work
        a vocabulary switch costs.

        Returns:
            dict with ``image_size`` (H, W), ``output_size`` (the original size unless above
            ``max_output_pixels``), ``vocabulary``, and per task: ``sem_seg`` (K, h, w) per-class
            scores in [0, Q] (sum over queries of class probability x mask probability, as in
            Mask2Former); ``panoptic_seg`` (h, w) int32 and ``segments_info`` [{id, isthing,
            category_id, score}]; ``instances`` {masks (N, h, w) bool, boxes (N, 4) x0 y0 x1
            y1, scores (N,), labels (N,)}; and ``class_logits`` (Q, K+1), ``mask_logits`` (Q,
            Hp/4, Wp/4). Raises ValueError for an unknown task or no vocabulary.
        """
        tasks = _check_tasks(tasks)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self._require_vocabulary()
        image_outputs = {
            "pred_embeds": features.pred_embeds,
            "clip_embeds": features.clip_embeds,
            "clip_vis_dense": features.clip_dense,
        }
        class_logits = self.model.classify(image_outputs, self._classifier, self._seen)["ensemble"][
            0
        ]
        out_hw = self.output_size(*features.image_size)
        return segment_outputs(
            features, class_logits, self.vocabulary, self.cfg.inference, out_hw, tasks
        )

    def predict_batch(self, images, **kwargs) -> list[dict]:
        """:meth:`predict` on each image (one at a time: padding a batch changes results)."""
        return [self.predict(image, **kwargs) for image in images]

    def _require_vocabulary(self) -> None:
        if self._classifier is None:
            raise ValueError("no vocabulary: pass vocabulary=... (class names or a vocab name)")


def segment_outputs(
    features: ImageFeatures,
    class_logits: torch.Tensor,
    vocabulary: Vocabulary,
    inference,
    out_hw: tuple[int, int],
    tasks: tuple[str, ...],
) -> dict:
    """The post-processing of :meth:`OVSegPredictor.segment` (shared with the ONNX runtime,
    :class:`ovseg.export.OnnxPredictor`): an image's mask logits and its (Q, K+1) ensemble
    class logits -> the result dict, at ``out_hw``, with the thresholds of ``inference``
    (:class:`ovseg.config.InferenceConfig`)."""
    result = {
        "image_size": tuple(features.image_size),
        "output_size": out_hw,
        "vocabulary": vocabulary,
        "class_logits": class_logits,
        "mask_logits": features.pred_masks[0],
    }
    if tasks == ("semantic",):
        # Semantic-only configs score at padded resolution, then crop and resize.
        masks = _upsample(features.pred_masks[0], features.padded_hw)
        scores = postprocess.semantic_inference(class_logits, masks)
        result["sem_seg"] = postprocess.resize_to_original(scores, features.resized_hw, out_hw)
        return result

    all_masks = None  # every query at the output size: only semantic reads them all
    if "semantic" in tasks:
        all_masks = _output_masks(features, out_hw)
        result["sem_seg"] = postprocess.semantic_inference(class_logits, all_masks)

    def masks_of(index):
        return all_masks[index] if all_masks is not None else _output_masks(features, out_hw, index)

    is_thing = torch.tensor(vocabulary.is_thing, device=class_logits.device)
    if "panoptic" in tasks:
        keep = postprocess.panoptic_queries(class_logits, inference.object_mask_threshold)
        result["panoptic_seg"], result["segments_info"] = postprocess.panoptic_inference(
            class_logits[keep],
            masks_of(keep),
            is_thing,
            object_mask_threshold=inference.object_mask_threshold,
            overlap_threshold=inference.overlap_threshold,
        )
    if "instance" in tasks:
        scores, labels, query = postprocess.instance_queries(
            class_logits, is_thing, detections_per_image=inference.detections_per_image
        )
        unique, inverse = query.unique(return_inverse=True)
        result["instances"] = postprocess.instance_results(
            scores, labels, masks_of(unique)[inverse]
        )
    return result


def _output_masks(features: ImageFeatures, out_hw, index=None) -> torch.Tensor:
    """Mask logits of the queries ``index`` (all when None) at the output size ``out_hw``: up
    to the padded input, cropped, resized (two bilinear steps, as the official code). Resizing
    is per query, so resizing only the queries a task reads is exact; a few queries at a time,
    so the padded-size maps (the largest tensors of post-processing) never exist for all."""
    low = features.pred_masks[0] if index is None else features.pred_masks[0][index]
    masks = low.new_empty((low.shape[0], *out_hw))
    for start in range(0, low.shape[0], RESIZE_CHUNK):
        chunk = _upsample(low[start : start + RESIZE_CHUNK], features.padded_hw)
        masks[start : start + RESIZE_CHUNK] = postprocess.resize_to_original(
            chunk, features.resized_hw, out_hw
        )
    return masks


def _upsample(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(Q, h, w) -> (Q, *size), bilinear, align_corners=False."""
    return F.interpolate(mask_logits[None], size=size, mode="bilinear", align_corners=False)[0]


def _check_tasks(tasks: tuple[str, ...] | str) -> tuple[str, ...]:
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task {unknown}: choose from {', '.join(TASKS)}")
    return tasks


def resolve_model(model: str = "auto", weights=None) -> tuple[str, str | None]:
    """The zoo model a front end will load, and the line to say when it is a fallback.

    ``model="auto"`` (no ``weights``): the real model when its weights are on this machine,
    else the shipped tiny model, with a message saying so. Cheap: nothing is loaded.
    """
    if weights is not None or model != "auto":
        return (model_zoo.DEFAULT_MODEL if model == "auto" else model), None
    if model_zoo.local_weights(model_zoo.DEFAULT_MODEL) is not None:
        return model_zoo.DEFAULT_MODEL, None
    fallback = model_zoo.fallback_model()
    return fallback, (
        f"ovseg: weights of {model_zoo.DEFAULT_MODEL} not found "
        f"({model_zoo.missing_weights_message(model_zoo.DEFAULT_MODEL)}); "
        f"using {fallback}: {model_zoo.get_entry(fallback).description}"
    )


def model_label(model: str = "auto", weights=None) -> str:
    """The name outputs record for this model choice: the weights file, or the zoo name."""
    return str(weights) if weights is not None else resolve_model(model)[0]


def load_predictor(
    model: str = "auto", *, weights=None, config=None, device=None, log=print, **kwargs
) -> OVSegPredictor:
    """The CLI and demo's way in. ``model="auto"``: the real model when its weights are on this
    machine, else the shipped tiny model, said plainly through ``log(message, file=stderr)``."""
    model, fallback_note = resolve_model(model, weights)
    if fallback_note:
        log(fallback_note, file=sys.stderr)
    return OVSegPredictor.from_pretrained(
        model, weights=weights, config=config, device=device, **kwargs
    )
