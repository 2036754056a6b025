"""Language features for the fields (LangSplat, Qin et al. 2024, section 3): each view's
masks with their frozen-CLIP embeddings, a per-scene autoencoder to a few latent channels,
and relevancy of text queries on decoded latents.

The masks are ovseg's own: the panoptic segments of a view (under a vocabulary that only
chooses and merges the mask proposals), each embedded by mask pooling of the frozen CLIP
(:meth:`ovseg.predictor.OVSegPredictor.pool_masks`, the space the text classifier lives in).
So a query afterwards can be any text: the field stores CLIP embeddings, not class labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.modeling.pixel_text import CANONICAL_PHRASES, RELEVANCY_TEMPERATURE, relevancy


def view_segments(predictor, image: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """One view's masks and embeddings.

    Args:
        predictor: an :class:`~ovseg.predictor.OVSegPredictor` with a vocabulary set.
        image: (H, W, 3) uint8.
    Returns:
        segment_map (H, W) int64, -1 where no segment (void), else an index into
        ``embeddings`` (S, D) float32, L2-normalised mask-pooled CLIP embeddings.
    """
    height, width = image.shape[:2]
    features = predictor.encode(image)
    result = predictor.segment(features, tasks=("panoptic",))
    panoptic = result["panoptic_seg"]
    panoptic = panoptic.cpu().numpy() if torch.is_tensor(panoptic) else np.asarray(panoptic)
    if panoptic.shape != (height, width):
        from PIL import Image

        panoptic = np.asarray(
            Image.fromarray(panoptic.astype(np.int32)).resize((width, height), Image.NEAREST)
        )
    ids = [s["id"] for s in result["segments_info"]]
    segment_map = np.full((height, width), -1, np.int64)
    masks = []
    for index, segment_id in enumerate(ids):
        mask = panoptic == segment_id
        segment_map[mask] = index
        masks.append(mask)
    if not masks:
        return segment_map, torch.zeros(0, predictor.model.backbone.embed_dim)
    embeddings = predictor.pool_masks(features, np.stack(masks)).float().cpu()
    return segment_map, embeddings


LEVELS = ("panoptic", "small", "medium", "large")


def view_levels(
    predictor, image: np.ndarray, levels: tuple[str, ...], *, points_per_side: int = 8
) -> dict[str, tuple[np.ndarray, torch.Tensor]]:
    """A view's masks at several granularities, each as ``(segment_map, embeddings)`` like
    :func:`view_segments`.

    "panoptic": the panoptic segments. "small" / "medium" / "large": LangSplat's three SAM
    levels from the model's prompt head: a ``points_per_side`` grid of clicks, each giving
    SAM's three ambiguity-aware masks, sorted by area into the three levels (masks that miss
    their click or cover under 0.5% of the image are dropped; within a level, a mask
    overlapping a kept one at IoU > 0.7 is dropped, and smaller masks are painted over larger
    ones). ValueError for an unknown level, or a SAM level when the model has no prompt head.
    """
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise ValueError(
            f"unknown mask level {', '.join(unknown)}: choose from {', '.join(LEVELS)}"
        )
    out = {}
    if "panoptic" in levels:
        out["panoptic"] = view_segments(predictor, image)
    sam_levels = [level for level in levels if level != "panoptic"]
    if sam_levels:
        if predictor.model.prompt_head is None:
            raise ValueError(
                f"mask levels {', '.join(sam_levels)} need a model with a prompt head "
                f"(SAM's decoder on the frozen CLIP); {predictor.model_name} has none: use "
                "--levels panoptic"
            )
        masks_by_level = _prompt_head_levels(predictor, image, points_per_side)
        features = predictor.encode(image)
        for level in sam_levels:
            masks = masks_by_level[level]
            segment_map = np.full(image.shape[:2], -1, np.int64)
            for index in np.argsort([-m.sum() for m in masks], kind="stable"):
                segment_map[masks[index]] = index  # smaller masks painted last, on top
            present = [i for i in range(len(masks)) if (segment_map == i).any()]
            remap = np.full(len(masks) + 1, -1, np.int64)
            remap[present] = np.arange(len(present))
            segment_map = np.where(segment_map >= 0, remap[segment_map], -1)
            kept = [masks[i] for i in present]
            embeddings = (
                predictor.pool_masks(features, np.stack(kept)).float().cpu()
                if kept
                else torch.zeros(0, predictor.model.backbone.embed_dim)
            )
            out[level] = (segment_map, embeddings)
    return out


@torch.no_grad()
def _prompt_head_levels(predictor, image: np.ndarray, points_per_side: int) -> dict:
    from ovseg.modeling.postprocess import resize_to_original

    features = predictor.encode(image)
    head = predictor.model.prompt_head
    height, width = image.shape[:2]
    grid = (np.arange(points_per_side) + 0.5) / points_per_side
    xs, ys = np.meshgrid(grid * width, grid * height)
    clicks = torch.tensor(np.stack([xs.ravel(), ys.ravel()], 1), dtype=torch.float32)
    scale = torch.tensor([features.resized_hw[1] / width, features.resized_hw[0] / height])
    points = (clicks * scale)[:, None].to(features.prompt_embedding.device)
    logits, iou = head(
        features.prompt_embedding,
        input_hw=features.padded_hw,
        points=points,
        point_labels=torch.ones(len(points), 1, dtype=torch.long, device=points.device),
        multimask=True,
    )
    upsampled = F.interpolate(logits, size=features.padded_hw, mode="bilinear", align_corners=False)
    masks = (
        resize_to_original(upsampled.flatten(0, 1), features.resized_hw, (height, width)).reshape(
            len(points), 3, height, width
        )
        > 0
    )
    masks, iou = masks.cpu().numpy(), iou.float().cpu().numpy()
    columns = np.clip(clicks[:, 0].long().numpy(), 0, width - 1)
    rows = np.clip(clicks[:, 1].long().numpy(), 0, height - 1)
    min_area = 0.005 * height * width
    levels: dict[str, list] = {"small": [], "medium": [], "large": []}
    for k in range(len(points)):
        order = np.argsort(masks[k].reshape(3, -1).sum(1), kind="stable")
        for level, index in zip(("small", "medium", "large"), order, strict=True):
            mask = masks[k, index]
            if mask[rows[k], columns[k]] and mask.sum() >= min_area:
                levels[level].append((float(iou[k, index]), mask))
    return {level: _deduplicate(candidates) for level, candidates in levels.items()}


def _deduplicate(candidates: list[tuple[float, np.ndarray]], threshold: float = 0.7) -> list:
    """Masks by predicted IoU, best first, each dropped when it overlaps a kept one at IoU >
    ``threshold`` (SAM's automatic generator's box NMS, on masks)."""
    kept: list[np.ndarray] = []
    for _, mask in sorted(candidates, key=lambda c: -c[0]):
        area = mask.sum()
        if all(
            (mask & other).sum() / max(area + other.sum() - (mask & other).sum(), 1) <= threshold
            for other in kept
        ):
            kept.append(mask)
    return kept


def _layer_sizes(dim: int, latent_dim: int) -> tuple[list[int], list[int]]:
    """LangSplat's encoder [256, 128, 64, 32] and decoder [16, 32, 64, 128, 256, 256]
    hidden sizes, the ones not smaller than needed for a D-dim embedding kept."""
    encoder = [d for d in (256, 128, 64, 32) if d < dim] or [max(latent_dim * 2, 8)]
    decoder = [d for d in (16, 32, 64, 128, 256, 256) if d <= dim] or [max(latent_dim * 2, 8)]
    return encoder, decoder


class LanguageAutoencoder(nn.Module):
    """CLIP embedding (D) <-> latent (L, on the unit sphere) for one scene (LangSplat's
    autoencoder: MLPs with BatchNorm-free ReLU layers; latents and decoded embeddings are
    L2-normalised)."""

    def __init__(self, dim: int, latent_dim: int = 3) -> None:
        super().__init__()
        encoder_sizes, decoder_sizes = _layer_sizes(dim, latent_dim)
        self.dim, self.latent_dim = dim, latent_dim
        self.encoder = _mlp([dim, *encoder_sizes, latent_dim])
        self.decoder = _mlp([latent_dim, *decoder_sizes, dim])

    def encode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., L) unit vectors."""
        return F.normalize(self.encoder(embeddings), dim=-1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(..., L) -> (..., D) unit vectors (a rendered latent need not be unit length)."""
        return F.normalize(self.decoder(latents), dim=-1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train_autoencoder(
    embeddings: torch.Tensor,
    weights: torch.Tensor,
    *,
    latent_dim: int = 3,
    iterations: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[LanguageAutoencoder, float]:
    """Fit the autoencoder on a scene's mask embeddings (S, D), sampled in proportion to
    ``weights`` (S,) (their pixel areas: LangSplat trains on every pixel's feature). Loss:
    L2 + 1e-3 x (1 - cosine), LangSplat's. Returns (model, mean cosine of the
    reconstructions, weighted by area)."""
    from tqdm import tqdm

    if embeddings.shape[0] == 0:
        raise ValueError("no mask embeddings: the views gave no segments to learn from")
    torch.manual_seed(seed)
    model = LanguageAutoencoder(embeddings.shape[1], latent_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    probabilities = weights.float() / weights.float().sum()
    for _ in tqdm(range(iterations), desc="autoencoder", disable=not progress):
        batch = embeddings[torch.multinomial(probabilities, batch_size, True, generator=generator)]
        decoded = model.decode(model.encode(batch))
        loss = (decoded - batch).square().sum(-1).mean() + 1e-3 * (
            1 - (decoded * batch).sum(-1)
        ).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        cosine = (model.decode(model.encode(embeddings)) * embeddings).sum(-1)
        quality = float((cosine * probabilities).sum())
    return model.eval(), quality


@torch.no_grad()
def latent_relevancy(
    decoder: LanguageAutoencoder,
    latents: torch.Tensor,
    phrase_embeddings: torch.Tensor,
    canonical_embeddings: torch.Tensor,
    *,
    temperature: float = RELEVANCY_TEMPERATURE,
) -> torch.Tensor:
    """LangSplat relevancy of phrases for latents (..., L): decode, then
    :func:`ovseg.modeling.pixel_text.relevancy` against ``canonical_embeddings`` (the
    canonical phrases "object, things, stuff, texture"). Returns (P, ...) in (0, 1)."""
    shape = latents.shape[:-1]
    embeddings = decoder.decode(latents.reshape(-1, latents.shape[-1]))  # (N, D)
    scores = relevancy(
        embeddings.T[None, :, :, None],
        phrase_embeddings,
        canonical_embeddings,
        temperature=temperature,
    )[0, :, :, 0]
    return scores.reshape(phrase_embeddings.shape[0], *shape)


__all__ = [
    "CANONICAL_PHRASES",
    "LEVELS",
    "view_levels",
    "LanguageAutoencoder",
    "latent_relevancy",
    "train_autoencoder",
    "view_segments",
]
