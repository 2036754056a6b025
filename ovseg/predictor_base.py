"""What every ovseg predictor shares, whatever runs its networks (PyTorch in
:class:`ovseg.predictor.OVSegPredictor`, ONNX Runtime in :class:`ovseg.export.OnnxPredictor`):
the vocabulary and its seen classes, the official resize / normalise / pad, a cache of recent
images' vocabulary-free features, and post-processing back to the image (or output) size.

A subclass gives the image network (:meth:`PredictorBase._image_network`), the class logits
(:meth:`PredictorBase._class_logits`), the text classifier of a vocabulary
(:meth:`PredictorBase._text_classifier`) and its ``inference`` settings.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ovseg.modeling import postprocess
from ovseg.modeling.mask_resize import resize_masks, semantic_scores
from ovseg.modeling.text_classifier import TextClassifier
from ovseg.preprocess import as_rgb_array, normalize_and_pad, resize_image, shortest_edge_size
from ovseg.vocabulary import Vocabulary, VocabularyLike, as_vocabulary, seen_class_mask

TASKS = ("panoptic", "semantic", "instance")
RESIZE_CHUNK = 16  # queries resized to the output size at a time in post-processing


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


class PredictorBase:
    """Vocabulary, image-feature cache, pre- and post-processing (see the module docstring).

    ``train_vocabulary``: the model's training classes (seen / unseen, kinds);
    ``feature_cache_size``: how many recent images' features are kept;
    ``max_output_pixels``: larger images get outputs at a downscaled size.
    """

    def __init__(
        self,
        train_vocabulary: Vocabulary,
        *,
        device: torch.device,
        feature_cache_size: int = 4,
        max_output_pixels: int = 2048 * 1024,
    ) -> None:
        self.device = device
        self.train_vocabulary = train_vocabulary
        self.feature_cache_size = feature_cache_size
        self.max_output_pixels = max_output_pixels
        self._features: OrderedDict[str, ImageFeatures] = OrderedDict()
        self.image_encodes = 0  # how many times the image network ran (tests, benchmarks)
        self.vocabulary: Vocabulary | None = None
        self._classifier: TextClassifier | None = None
        self._seen: torch.Tensor | None = None

    # ------------------------------------------------------------- given by a subclass
    @property
    def inference(self):
        """The :class:`ovseg.config.InferenceConfig` (sizes, normalisation, thresholds)."""
        raise NotImplementedError

    def _text_classifier(self, vocab: Vocabulary) -> TextClassifier:
        raise NotImplementedError

    def _image_network(self, pixels: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """(1, 3, Hp, Wp) normalised, padded -> pred_embeds, clip_embeds, pred_masks,
        clip_dense, prompt_embedding (or None), float32."""
        raise NotImplementedError

    def _class_logits(
        self, features: ImageFeatures, *, alpha: float | None = None, beta: float | None = None
    ) -> torch.Tensor:
        """The ensemble class logits (Q, K+1) of the current vocabulary, with the ensemble's
        out-of-vocabulary weights ``alpha`` (seen classes) and ``beta`` (unseen) when given,
        else the model's."""
        raise NotImplementedError

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
            self._use_vocabulary(vocab, self._text_classifier(vocab))
        return vocab

    def _use_vocabulary(self, vocab: Vocabulary, classifier: TextClassifier) -> None:
        self._classifier = classifier.to(self.device)
        self._seen = torch.tensor(seen_class_mask(vocab, self.train_vocabulary), device=self.device)
        self.vocabulary = vocab

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

    def _require_vocabulary(self) -> None:
        if self._classifier is None:
            raise ValueError("no vocabulary: pass vocabulary=... (class names or a vocab name)")

    # ---------------------------------------------------------------- image features
    def network_input_size(
        self, height: int, width: int, short_side: int | None = None
    ) -> tuple[int, int]:
        """(h, w) the image is resized to: short side ``short_side`` (default: the config's
        test size), long side at most the config's maximum."""
        inf = self.inference
        return shortest_edge_size(height, width, short_side or inf.min_size_test, inf.max_size_test)

    # Whether _image_network takes a batch of several images (an exported graph may not).
    batches_images = True

    @torch.no_grad()
    def encode(self, image, *, short_side: int | None = None) -> ImageFeatures:
        """Run the image network once: the vocabulary-independent :class:`ImageFeatures`.

        Args:
            image: a path, PIL image or (H, W[, C]) array (see ``preprocess.as_rgb_array``).
            short_side: test resize of the short side in pixels (default: the config's).
        The last ``feature_cache_size`` images' features are kept: the same image at the same
        size is not encoded twice.
        """
        return self.encode_many([image], short_side=short_side)[0]

    @torch.no_grad()
    def encode_many(
        self, images, *, short_side: int | None = None, batch_size: int = 1
    ) -> list[ImageFeatures]:
        """:meth:`encode` of several images, one :class:`ImageFeatures` each, in order.

        Consecutive images resized to the same network input size run through the image
        network as one batch of up to ``batch_size`` (they need no extra padding, so each
        image's features are its own; equal to one at a time to float rounding: the matrix
        products block a batch differently). All are cached as :meth:`encode` caches, so a
        :meth:`predict` of each afterwards does not encode again. Raises ValueError for a
        ``batch_size`` below 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not self.batches_images:
            batch_size = 1
        arrays = [as_rgb_array(image) for image in images]
        sizes = [self.network_input_size(*a.shape[:2], short_side) for a in arrays]
        keys = [
            hashlib.sha1(a.tobytes()).hexdigest() + f"{a.shape}{size}"
            for a, size in zip(arrays, sizes, strict=True)
        ]
        found: dict[str, ImageFeatures] = {}
        for key in keys:
            if key in self._features:
                self._features.move_to_end(key)
                found[key] = self._features[key]
        todo = [keys.index(key) for key in dict.fromkeys(keys) if key not in found]
        while todo:
            batch = [todo.pop(0)]
            while todo and len(batch) < batch_size and sizes[todo[0]] == sizes[batch[0]]:
                batch.append(todo.pop(0))
            for index, features in zip(
                batch, self._encode_batch([arrays[i] for i in batch], sizes[batch[0]]), strict=True
            ):
                found[keys[index]] = features
                self._remember(keys[index], features)
        return [found[key] for key in keys]

    def _encode_batch(self, arrays: list, resized_hw: tuple[int, int]) -> list[ImageFeatures]:
        """One pass of the image network over images that all resize to ``resized_hw``."""
        inf = self.inference
        pixels = normalize_and_pad(
            [resize_image(array, resized_hw) for array in arrays],
            inf.pixel_mean,
            inf.pixel_std,
            inf.size_divisibility,
            device=self.device,
        )
        outputs = self._image_network(pixels)
        self.image_encodes += len(arrays)
        return [
            ImageFeatures(
                **{
                    name: None if value is None else value[index : index + 1]
                    for name, value in outputs.items()
                },
                image_size=tuple(array.shape[:2]),
                resized_hw=resized_hw,
                padded_hw=tuple(pixels.shape[-2:]),
            )
            for index, array in enumerate(arrays)
        ]

    def _remember(self, key: str, features: ImageFeatures) -> None:
        if self.feature_cache_size > 0:
            self._features[key] = features
            while len(self._features) > self.feature_cache_size:
                self._features.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget the cached image features."""
        self._features.clear()

    # ---------------------------------------------------------------- prediction
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The original size, or a downscaled one above ``max_output_pixels``."""
        if height * width <= self.max_output_pixels:
            return height, width
        scale = math.sqrt(self.max_output_pixels / (height * width))
        return max(1, int(height * scale)), max(1, int(width * scale))

    @torch.no_grad()
    def segment(
        self,
        features: ImageFeatures,
        *,
        vocabulary: VocabularyLike | None = None,
        tasks: tuple[str, ...] | str = TASKS,
        alpha: float | None = None,
        beta: float | None = None,
    ) -> dict:
        """Classify an image's features with a vocabulary and post-process them: the only work
        a vocabulary switch costs. ``alpha`` / ``beta``: the geometric ensemble's
        out-of-vocabulary weights for seen / unseen classes (default: the model's; (0, 0) is
        the in-vocabulary head alone, (1, 1) the frozen CLIP alone).

        Returns:
            dict with ``image_size`` (H, W), ``output_size`` (the original size unless above
            ``max_output_pixels``), ``vocabulary``, and per task: ``sem_seg`` (K, h, w) per-class
            scores in [0, Q] (sum over queries of class probability x mask probability, as in
            Mask2Former); ``panoptic_seg`` (h, w) int32 and ``segments_info`` [{id, isthing,
            category_id, score}] (and ``keep_novel`` True when ``inference.keep_novel`` kept
            unseen classes' masks); ``instances`` {masks (N, h, w) bool, boxes (N, 4) x0 y0 x1
            y1, scores (N,), labels (N,)}; and ``class_logits`` (Q, K+1), ``mask_logits`` (Q,
            Hp/4, Wp/4). Raises ValueError for an unknown task or no vocabulary.
        """
        tasks = check_tasks(tasks)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self._require_vocabulary()
        class_logits = self._class_logits(features, alpha=alpha, beta=beta)
        out_hw = self.output_size(*features.image_size)
        return segment_outputs(
            features, class_logits, self.vocabulary, self.inference, out_hw, tasks, seen=self._seen
        )

    def predict_batch(self, images, **kwargs) -> list[dict]:
        """:meth:`predict` on each image (one at a time: padding a batch changes results)."""
        return [self.predict(image, **kwargs) for image in images]


def segment_outputs(
    features: ImageFeatures,
    class_logits: torch.Tensor,
    vocabulary: Vocabulary,
    inference,
    out_hw: tuple[int, int],
    tasks: tuple[str, ...],
    *,
    seen: torch.Tensor | None = None,
) -> dict:
    """The post-processing of :meth:`OVSegPredictor.segment` (shared with the ONNX runtime,
    :class:`ovseg.export.OnnxPredictor`): an image's mask logits and its (Q, K+1) ensemble
    class logits -> the result dict, at ``out_hw``, with the thresholds of ``inference``
    (:class:`ovseg.config.InferenceConfig`). ``seen`` (K,) bool: the vocabulary's classes
    seen in training, needed by ``inference.keep_novel``."""
    result = {
        "image_size": tuple(features.image_size),
        "output_size": out_hw,
        "vocabulary": vocabulary,
        "class_logits": class_logits,
        "mask_logits": features.pred_masks[0],
    }
    low, padded = features.pred_masks[0], features.padded_hw
    if tasks == ("semantic",):
        # Semantic-only configs score at padded resolution, then crop and resize.
        scores = semantic_scores(class_logits, low, padded, padded, padded)
        if scores is None:
            scores = postprocess.semantic_inference(class_logits, _upsample(low, padded))
        result["sem_seg"] = postprocess.resize_to_original(scores, features.resized_hw, out_hw)
        return result

    all_masks = None  # every query at the output size, where semantic needs them all
    if "semantic" in tasks:
        result["sem_seg"] = semantic_scores(class_logits, low, padded, features.resized_hw, out_hw)
        if result["sem_seg"] is None:
            all_masks = _output_masks(features, out_hw)
            result["sem_seg"] = postprocess.semantic_inference(class_logits, all_masks)

    def masks_of(index):
        return all_masks[index] if all_masks is not None else _output_masks(features, out_hw, index)

    is_thing = torch.tensor(vocabulary.is_thing, device=class_logits.device)
    if "panoptic" in tasks:
        novel = None
        if getattr(inference, "keep_novel", False):
            if seen is None:
                raise ValueError("keep_novel needs the vocabulary's seen classes")
            novel = ~seen.to(device=class_logits.device, dtype=torch.bool)
        keep = postprocess.panoptic_queries(
            class_logits, inference.object_mask_threshold, novel_classes=novel
        )
        result["panoptic_seg"], result["segments_info"] = postprocess.panoptic_inference(
            class_logits[keep],
            masks_of(keep),
            is_thing,
            object_mask_threshold=inference.object_mask_threshold,
            overlap_threshold=inference.overlap_threshold,
            novel_classes=novel,
        )
        if novel is not None:
            result["keep_novel"] = True  # said in the outputs: not the official FC-CLIP rule
    if "instance" in tasks:
        scores, labels, query = postprocess.instance_queries(
            class_logits, is_thing, detections_per_image=inference.detections_per_image
        )
        unique, inverse = query.unique(return_inverse=True)
        result["instances"] = postprocess.instance_results(
            scores, labels, masks_of(unique)[inverse]
        )
    return result


def check_keep_novel(inference, tasks: tuple[str, ...] | None = None) -> None:
    """One-line ValueError where the keep-novel rule (``inference.keep_novel``) means nothing:
    an ensemble that gives the frozen CLIP's out-of-vocabulary branch no weight on unseen
    classes (``out_vocab_weight_unseen`` 0: the in-vocabulary head, which calls them no object,
    decides alone), or ``tasks`` without panoptic (the rule changes panoptic output only)."""
    if not getattr(inference, "keep_novel", False):
        return
    if inference.out_vocab_weight_unseen <= 0:
        raise ValueError(
            "keep-novel needs the frozen CLIP's out-of-vocabulary branch, and this model's "
            "ensemble gives it no weight on unseen classes (out_vocab_weight_unseen = "
            f"{inference.out_vocab_weight_unseen}): drop keep-novel"
        )
    if tasks is not None and "panoptic" not in tasks:
        raise ValueError(
            f"keep-novel changes panoptic output only, and the task is {', '.join(tasks)}: "
            "add the panoptic task or drop keep-novel"
        )


def _output_masks(features: ImageFeatures, out_hw, index=None) -> torch.Tensor:
    """Mask logits of the queries ``index`` (all when None) at the output size ``out_hw``: up
    to the padded input, cropped, resized (two bilinear steps, as the official code; on the
    CPU folded into one compiled pass, :func:`ovseg.modeling.mask_resize.resize_masks`).
    Resizing is per query, so resizing only the queries a task reads is exact."""
    low = features.pred_masks[0] if index is None else features.pred_masks[0][index]
    return resize_masks(low, features.padded_hw, features.resized_hw, out_hw, chunk=RESIZE_CHUNK)


def _upsample(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(Q, h, w) -> (Q, *size), bilinear, align_corners=False."""
    return F.interpolate(mask_logits[None], size=size, mode="bilinear", align_corners=False)[0]


def check_tasks(tasks: tuple[str, ...] | str) -> tuple[str, ...]:
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task {unknown}: choose from {', '.join(TASKS)}")
    return tasks
