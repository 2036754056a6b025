"""Heat maps for any text, and the training-free pixel-text semantic baseline, from an image's
cached features (:class:`ovseg.predictor.ImageFeatures`): no second image pass.

The tensor maths is :mod:`ovseg.modeling.pixel_text`; here are the predictor-level steps
(text encoding with the model's prompt templates, resizing back to the image).
"""

from __future__ import annotations

import numpy as np
import torch

from ovseg.modeling import postprocess
from ovseg.modeling.pixel_text import (
    CANONICAL_PHRASES,
    RELEVANCY_TEMPERATURE,
    dense_clip_embeddings,
    pixel_text_logits,
    relevancy,
)

MAX_PHRASE_CHARS = 300


def check_phrases(phrases) -> list[str]:
    """A phrase or a list of them -> a list of stripped phrases. ValueError for none, an empty
    one or one over ``MAX_PHRASE_CHARS`` characters."""
    if isinstance(phrases, str):
        phrases = [phrases]
    phrases = [str(p).strip() for p in phrases]
    if not phrases:
        raise ValueError("no heat-map phrase: give some text, e.g. 'red car'")
    for phrase in phrases:
        if not phrase:
            raise ValueError("a heat-map phrase is empty: give some text, e.g. 'red car'")
        if len(phrase) > MAX_PHRASE_CHARS:
            raise ValueError(
                f"a heat-map phrase has {len(phrase)} characters (at most {MAX_PHRASE_CHARS}): "
                "shorten it"
            )
    return phrases


def _to_image(maps: torch.Tensor, features, out_hw) -> torch.Tensor:
    """(N, h, w) maps on the stride-32 grid of the padded input -> (N, H, W) at ``out_hw``:
    up to the padded input, cropped to the resized image, resized (as masks are)."""
    padded = torch.nn.functional.interpolate(
        maps[None], size=features.padded_hw, mode="bilinear", align_corners=False
    )[0]
    return postprocess.resize_to_original(padded, features.resized_hw, out_hw)


@torch.no_grad()
def relevancy_maps(
    predictor,
    features,
    phrases,
    *,
    canonical: tuple[str, ...] = CANONICAL_PHRASES,
    temperature: float = RELEVANCY_TEMPERATURE,
) -> np.ndarray:
    """Relevancy (LERF / LangSplat, see :func:`ovseg.modeling.pixel_text.relevancy`) of each
    phrase at every pixel: (P, H, W) float32 in (0, 1) at ``predictor.output_size`` of the
    image. Phrases are encoded like class names (the model's prompt templates, averaged);
    ValueError for an empty phrase."""
    phrases = check_phrases(phrases)
    encoder = predictor.text_encoder
    pixels = dense_clip_embeddings(predictor.model.backbone, features.clip_dense)
    scores = relevancy(
        pixels,
        encoder.encode_texts(phrases).to(pixels.device),
        encoder.encode_texts(list(canonical)).to(pixels.device),
        temperature=temperature,
    )[0]
    out_hw = predictor.output_size(*features.image_size)
    return _to_image(scores, features, out_hw).clamp(0, 1).cpu().numpy().astype(np.float32)


@torch.no_grad()
def pixel_text_semantic(predictor, features) -> dict:
    """The training-free semantic baseline: every location of the frozen CLIP's stride-32 map
    classified against the vocabulary (cosine x CLIP's temperature, softmax over the K
    classes), upsampled to the output size. Returns ``sem_seg`` (K, H, W) class probabilities
    and the usual ``image_size``, ``output_size``, ``vocabulary`` (as :meth:`segment`)."""
    predictor._require_vocabulary()
    backbone = predictor.model.backbone
    pixels = dense_clip_embeddings(backbone, features.clip_dense)
    logits = pixel_text_logits(pixels, predictor.classifier, backbone.clip.logit_scale)[0]
    out_hw = predictor.output_size(*features.image_size)
    return {
        "image_size": tuple(features.image_size),
        "output_size": out_hw,
        "vocabulary": predictor.vocabulary,
        "sem_seg": _to_image(logits, features, out_hw).softmax(dim=0),
    }
