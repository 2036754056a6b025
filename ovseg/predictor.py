"""OVSegPredictor: image(s) + vocabulary in, per-image segmentation results out.

Owns the PyTorch model, its precision and the text classifier's caches; the vocabulary, the
official resize / normalise / pad, the cache of vocabulary-independent image features and the
post-processing back to the image size come from :class:`ovseg.predictor_base.PredictorBase`
(shared with the ONNX Runtime predictor). The two steps are public, in the spirit of
segment-anything's ``set_image``:

    features = predictor.encode(image)                      # the image network, once
    result = predictor.segment(features, vocabulary=["cat", "sky"], tasks="panoptic")
    result = predictor.segment(features, vocabulary="ade150")  # classification only

``predict(image, vocabulary=...)`` does both, with a small cache of recent images' features.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovseg import model_zoo
from ovseg.checkpoint import has_clip, is_text_key, load_text_weights, load_weights, read_state_dict
from ovseg.config import ModelConfig, load_config
from ovseg.modeling.backbone import CLIPText
from ovseg.modeling.fcclip import FCCLIP, build_model
from ovseg.modeling.text_classifier import TextClassifier, TextEncoder
from ovseg.precision import choose_precision, mlp_probe_shape, quantize_int8
from ovseg.predictor_base import (  # noqa: F401  (TASKS, segment_outputs: public here too)
    TASKS,
    ImageFeatures,
    PredictorBase,
    check_keep_novel,
    check_tasks,
    segment_outputs,
)
from ovseg.vocabulary import Vocabulary, VocabularyLike, load_templates, load_vocabulary


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


class OVSegPredictor(PredictorBase):
    """Images + vocabulary in, results out (see the module docstring).

    ``precision``: "fp32" (default; the exact path, the official outputs), "bf16" / "fp16"
    (autocast), "int8" (CPU: dynamically quantized MLP and projection layers) or "auto" (the
    fastest path the hardware runs natively, measured; see :mod:`ovseg.precision`). The
    choice and its reason are in ``self.precision``; ValueError for an unknown one or int8 on
    a GPU. ``keep_novel`` (None: the config's ``inference.keep_novel``, off for the official
    model): panoptic output keeps the queries whose best class is unseen in training even where
    the in-vocabulary head says "no object" (:func:`ovseg.modeling.postprocess.panoptic_queries`);
    ValueError in one line where the model's ensemble gives the frozen CLIP no say on them.
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
        keep_novel: bool | None = None,
    ) -> None:
        if keep_novel is not None:  # a copy: the caller's config is left as it was
            inference = dataclasses.replace(cfg.inference, keep_novel=bool(keep_novel))
            cfg = dataclasses.replace(cfg, inference=inference)
        check_keep_novel(cfg.inference)
        self.cfg = cfg
        super().__init__(
            load_vocabulary(cfg.text.train_vocabulary),
            device=resolve_device(device),
            feature_cache_size=feature_cache_size,
            max_output_pixels=max_output_pixels,
        )
        self.model = model.to(self.device).eval()
        # fp32 is the exact path; see ovseg.precision for the fast ones and "auto".
        self.precision = choose_precision(
            precision, self.device, probe_shape=mlp_probe_shape(self.model)
        )
        if self.precision.precision == "int8":
            quantize_int8(self.model)
            self.model.pixel_decoder.autocast_inside = self.precision.autocast_dtype is not None
        self.text_encoder = TextEncoder(
            model.backbone,
            load_templates(cfg.text.templates),
            batch_size=cfg.text.batch_size,
            cache_dir=text_cache_dir,
            use_disk_cache=use_disk_text_cache,
            context=None if model.text_context is None else model.text_context.context,
        )
        self.model_name = cfg.name  # the zoo name or weights file, for records

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

    # ---------------------------------------------------------------- PredictorBase parts
    @property
    def inference(self):
        return self.cfg.inference

    def _text_classifier(self, vocab: Vocabulary) -> TextClassifier:
        return self.text_encoder(vocab)

    def _image_network(self, pixels: torch.Tensor) -> dict:
        dtype = self.precision.autocast_dtype
        autocast = torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)
        with autocast:
            outputs = self.model.encode_image(pixels, aux_classes=False, aux_outputs=False)
            head = self.model.prompt_head
            prompt_embedding = None
            if head is not None:
                maps = {**outputs["features"], "mask_features": outputs["mask_features"]}
                prompt_embedding = head.embed_image(maps)
        return {
            "pred_embeds": outputs["pred_embeds"].float(),
            "clip_embeds": outputs["clip_embeds"].float(),
            "pred_masks": outputs["pred_masks"].float(),
            "clip_dense": outputs["features"]["clip_vis_dense"].float(),
            "prompt_embedding": None if prompt_embedding is None else prompt_embedding.float(),
        }

    def _class_logits(
        self, features: ImageFeatures, *, alpha: float | None = None, beta: float | None = None
    ) -> torch.Tensor:
        image_outputs = {
            "pred_embeds": features.pred_embeds,
            "clip_embeds": features.clip_embeds,
            "clip_vis_dense": features.clip_dense,
        }
        logits = self.model.classify(
            image_outputs, self._classifier, self._seen, alpha=alpha, beta=beta
        )
        return logits["ensemble"][0]

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
        short_side: int | None = None,
    ) -> dict:
        """Label any masks (SAM's, a user's) with the vocabulary, the way the
        out-of-vocabulary branch labels a query mask, and build panoptic / semantic /
        instance outputs from them (see :func:`ovseg.sam.segment.segment_masks`).

        Args:
            image: a path, PIL image or (H, W[, C]) array.
            masks: (N, H, W) bool at the image size; mask_scores: (N,) in [0, 1] (default 1).
            short_side: the test resize of the image pass (default: the config's).
        """
        from ovseg.sam.segment import segment_masks

        tasks = check_tasks(tasks)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self._require_vocabulary()
        return segment_masks(
            self, image, masks, mask_scores=mask_scores, tasks=tasks, short_side=short_side
        )

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
        short_side: int | None = None,
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
            short_side: the test resize of the image pass (default: the config's).
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
            short_side=short_side,
        )

    # ---------------------------------------------------------------- prediction
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
        tasks = check_tasks(tasks)
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


class TextModel:
    """A model's text half, for work that needs nothing else (``ovseg fields query``: a
    fitted field is queried with phrase embeddings alone). ``text_encoder`` is the
    :class:`TextEncoder` an :class:`OVSegPredictor` of the same weights has (the frozen CLIP's
    text tower with the model's prompt templates or learned context): the same embeddings,
    bit for bit, and the same fingerprint; ``model_name`` names the model as the predictor
    does. The image trunk, pixel decoder and transformer decoder are never built, and their
    weights never read."""

    def __init__(
        self,
        text: CLIPText,
        cfg: ModelConfig,
        *,
        context=None,
        device: str | torch.device | None = "cpu",
        text_cache_dir: str | Path | None = None,
        use_disk_text_cache: bool = True,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(device)
        self.text_encoder = TextEncoder(
            text.to(self.device),
            load_templates(cfg.text.templates),
            batch_size=cfg.text.batch_size,
            cache_dir=text_cache_dir,
            use_disk_cache=use_disk_text_cache,
            context=None if context is None else context.to(self.device),
        )
        self.model_name = cfg.name

    @classmethod
    def from_pretrained(
        cls,
        model: str = model_zoo.DEFAULT_MODEL,
        *,
        weights: str | Path | None = None,
        config: str | Path | None = None,
        **kwargs,
    ) -> TextModel:
        """:meth:`OVSegPredictor.from_pretrained`'s model, text half only: only the text
        tower's tensors are read from a safetensors file. The same errors (a file that does
        not fit is :class:`ovseg.checkpoint.WeightsError` naming its keys)."""
        from ovseg.modeling.backbone import build_clip_text
        from ovseg.modeling.text_context import LearnableContext

        explicit_weights = weights
        if weights is None:
            weights = model_zoo.local_weights(model)
            if weights is None:
                raise FileNotFoundError(model_zoo.missing_weights_message(model))
        cfg = load_config(config or model_zoo.get_entry(model).config)
        state = read_state_dict(weights, keep=is_text_key)
        clip_by_tag = bool(cfg.clip.pretrained) and not has_clip(state)
        text = build_clip_text(
            cfg.clip.model_name,
            pretrained=cfg.clip.pretrained if clip_by_tag else None,
            model_config_file=cfg.clip.model_config_file,
        )
        context = None
        if cfg.text_context.learnable_context:
            width = int(text.clip.token_embedding.weight.shape[1])
            context = LearnableContext(width, cfg.text_context.learnable_context)
        load_text_weights(
            text, state, context=context, clip_loaded=clip_by_tag, source=str(weights)
        )
        text_model = cls(text, cfg, context=context, **kwargs)
        text_model.model_name = str(explicit_weights) if explicit_weights else model
        return text_model


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


def load_text_model(
    model: str = "auto", *, weights=None, config=None, device=None, log=print, **kwargs
) -> TextModel:
    """:func:`load_predictor` for work that needs the model's text alone: the
    :class:`TextModel` of the same model, chosen and said the same way."""
    model, fallback_note = resolve_model(model, weights)
    if fallback_note:
        log(fallback_note, file=sys.stderr)
    return TextModel.from_pretrained(model, weights=weights, config=config, device=device, **kwargs)
