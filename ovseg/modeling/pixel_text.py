"""Pixel-text matching on the frozen CLIP: per-location CLIP embeddings, score maps against
text embeddings, and relevancy heat maps for free-form phrases.

DenseCLIP (Rao et al. 2022) turns CLIP's image-text matching into pixel-text score maps; here
the dense CLIP map is sent through the same CLIP image head that mask pooling uses (FC-CLIP's
out-of-vocabulary branch), at every location, so a location and a mask-pooled region live in
one embedding space. Relevancy is LERF's / LangSplat's: a phrase against canonical phrases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg.modeling.text_classifier import TextClassifier

# LERF (Kerr et al. 2023) and LangSplat's canonical phrases and softmax temperature.
CANONICAL_PHRASES = ("object", "things", "stuff", "texture")
RELEVANCY_TEMPERATURE = 10.0


@torch.no_grad()
def dense_clip_embeddings(backbone, clip_dense: torch.Tensor) -> torch.Tensor:
    """The CLIP image head at every location of the dense map: (B, C, h, w) frozen ConvNeXt
    map (``clip_vis_dense``, stride 32) -> (B, D, h, w) CLIP embeddings, L2-normalised over D.
    Each location goes through exactly what a mask-pooled region goes through
    (``backbone.project_pooled``: the trunk head's LayerNorm, then CLIP's projection)."""
    batch, channels, height, width = clip_dense.shape
    pooled = clip_dense.flatten(2).transpose(1, 2)  # (B, h*w, C): one "region" per location
    embeddings = backbone.project_pooled(pooled).float()
    embeddings = F.normalize(embeddings, dim=-1)
    return embeddings.transpose(1, 2).reshape(batch, -1, height, width)


def pixel_text_similarity(pixel_embeddings: torch.Tensor, classifier: TextClassifier):
    """Cosine of each pixel with each class: (B, D, h, w) L2-normalised pixel embeddings and a
    classifier of K classes ((S, D) or per image (B, S, D) embeddings) -> (B, K, h, w), the max
    over each class's synonyms."""
    text = classifier.embeddings.to(pixel_embeddings)
    equation = "bdhw,sd->bshw" if text.dim() == 2 else "bdhw,bsd->bshw"
    raw = torch.einsum(equation, pixel_embeddings, text)  # (B, S, h, w)
    pad = raw.new_full((raw.shape[0], 1, *raw.shape[2:]), float("-inf"))
    padded = torch.cat([raw, pad], dim=1)
    index = classifier.synonym_index.to(raw.device)
    index = torch.where(index > raw.shape[1], raw.shape[1], index)  # the void slot -> pad
    return padded[:, index].amax(dim=2)


def pixel_text_logits(
    pixel_embeddings: torch.Tensor, classifier: TextClassifier, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Score maps: (B, D, h, w) L2-normalised pixel embeddings and a text classifier of K
    classes -> (B, K, h, w) logits, exp(logit_scale) (clamped at 100, CLIP's) x cosine, the max
    over each class's synonyms (as :func:`ovseg.modeling.text_classifier.classification_logits`
    does for masks; DenseCLIP's score map, eq. 4, with synonyms)."""
    scale = torch.clamp(logit_scale.exp(), max=100)
    return scale * pixel_text_similarity(pixel_embeddings, classifier)


def pixel_text_loss(
    score_maps: torch.Tensor, semantic: torch.Tensor, *, ignore_index: int = 255
) -> torch.Tensor:
    """DenseCLIP's auxiliary segmentation loss: (B, K, h, w) score-map logits (cosine divided
    by the temperature) upsampled bilinearly to the (B, H, W) semantic targets (class ids,
    ``ignore_index`` for void), pixel cross-entropy, mean over labelled pixels (0 if none)."""
    logits = F.interpolate(
        score_maps.float(), size=semantic.shape[-2:], mode="bilinear", align_corners=False
    )
    if not bool((semantic != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, semantic.long(), ignore_index=ignore_index)


def relevancy(
    pixel_embeddings: torch.Tensor,
    phrase_embeddings: torch.Tensor,
    canonical_embeddings: torch.Tensor,
    *,
    temperature: float = RELEVANCY_TEMPERATURE,
) -> torch.Tensor:
    """LERF / LangSplat relevancy of phrases at every pixel.

    For a phrase q and canonical phrases c_i ("object", "things", "stuff", "texture"):
    relevancy = min_i exp(t q.x) / (exp(t q.x) + exp(t c_i.x)), x the pixel's embedding, t the
    temperature (10 in LangSplat's code). 0.5 means "as close to the phrase as to the vaguest
    canonical phrase"; LangSplat and LERF show a pixel as relevant above 0.5.

    Args:
        pixel_embeddings: (B, D, h, w) L2-normalised.
        phrase_embeddings: (P, D), canonical_embeddings: (N, D), L2-normalised.
    Returns:
        (B, P, h, w) in (0, 1).
    """
    phrase = torch.einsum("bdhw,pd->bphw", pixel_embeddings, phrase_embeddings.to(pixel_embeddings))
    canonical = torch.einsum(
        "bdhw,nd->bnhw", pixel_embeddings, canonical_embeddings.to(pixel_embeddings)
    )
    # softmax over (phrase, canonical_i) = sigmoid(t (q.x - c_i.x)); the min is at the max c_i.
    return torch.sigmoid(temperature * (phrase - canonical.amax(dim=1, keepdim=True)))
