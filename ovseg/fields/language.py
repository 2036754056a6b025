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
    "LanguageAutoencoder",
    "latent_relevancy",
    "train_autoencoder",
    "view_segments",
]
