"""Contrastive (CLIP) training of an open_clip model on image-caption pairs and region-caption
pairs, and zero-shot classification with it. Used to make a small CLIP where no pretrained one
can be had.

Two kinds of training pairs, mixed in every batch of one contrastive loss:

- :class:`ImagePool`: a whole image and its caption (CLIP's own objective, global pooling);
- :class:`RegionPool`: regions of a scene and their captions, RegionCLIP-style. A region is a
  set of cells of the scene's stride-32 dense map; its embedding is the mean of those cells
  through the CLIP image head - what FC-CLIP's mask pooling feeds that head at test time - so
  the dense map learns to say what is where, at the scale it is pooled at.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ImagePool:
    """Whole images with captions. Pairs of one group are positives of each other (e.g. the
    same words in other phrasings); ``groups=None``: each caption is its own group."""

    images: torch.Tensor  # (N, H, W, 3) uint8
    captions: list[str]
    groups: list[str] | None = None


@dataclass
class RegionPool:
    """Scenes (all of one size) with captioned regions: per scene a list of (cells, caption,
    group), ``cells`` a (H/32, W/32) bool array of the stride-32 grid. With ``captions`` the
    whole scene is a pair too (its global embedding and its caption)."""

    images: torch.Tensor  # (N, H, W, 3) uint8
    regions: list[list[tuple[np.ndarray, str, str]]]
    captions: list[str] | None = None


@dataclass
class CLIPTrainConfig:
    steps: int = 1500
    batch_sizes: tuple[int, ...] = (8, 56)  # images (scenes for a RegionPool) per step per pool
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 50
    seed: int = 0


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float on the 0..255 scale, as ovseg's input."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() - mean_t) / std_t


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    groups: list,
) -> torch.Tensor:
    """Symmetric InfoNCE; pairs of one group (e.g. captions saying the same thing in other
    words) are all positives of each other (soft targets), not false negatives."""
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * image_embeds @ text_embeds.T
    index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    ids = torch.tensor([index[g] for g in groups])
    targets = (ids[:, None] == ids[None, :]).float()
    targets = targets / targets.sum(1, keepdim=True)
    loss_images = -(targets * logits.log_softmax(1)).sum(1).mean()
    loss_texts = -(targets * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_images + loss_texts) / 2


def reset_layer_scale(model, value: float) -> int:
    """Set every ConvNeXt layer-scale ``gamma`` of the image tower to ``value``; returns how
    many. timm starts them at 1e-6 (blocks near identity), which suits long training from
    scratch; a short one learns shapes much faster from 1.0 (measured: supervised shape
    accuracy 54% vs 36% after 750 steps)."""
    count = 0
    with torch.no_grad():
        for name, parameter in model.visual.named_parameters():
            if name.endswith(".gamma"):
                parameter.fill_(value)
                count += 1
    return count


def image_head(model, pooled: torch.Tensor) -> torch.Tensor:
    """Pooled dense features (N, C) -> CLIP image embeddings (N, D): the trunk head (pool over
    1x1, norm) and the projection, as :meth:`CLIPBackbone.project_pooled` but differentiable."""
    return model.visual.head(model.visual.trunk.head(pooled[:, :, None, None]))


def region_embeddings(model, dense: torch.Tensor, owners: torch.Tensor, cells: torch.Tensor):
    """Mean of ``dense`` (B, C, h, w) over each region's cells (R, h, w) of scene ``owners``
    (R,), through the image head -> (R, D)."""
    weights = cells.float() / cells.flatten(1).sum(1).clamp(min=1)[:, None, None]
    return image_head(model, torch.einsum("rchw,rhw->rc", dense[owners], weights))


def _pool_pairs(model, pool, pick: torch.Tensor, flip: torch.Tensor, mean, std):
    """Embeddings, captions and groups of the pairs of images ``pick`` of one pool."""
    pixels = normalise(pool.images[pick], mean, std)
    pixels[flip] = pixels[flip].flip(-1)
    if isinstance(pool, ImagePool):
        captions = [pool.captions[int(i)] for i in pick]
        source = pool.groups if pool.groups is not None else pool.captions
        return model.encode_image(pixels), captions, [source[int(i)] for i in pick]
    dense = model.visual.trunk.forward_features(pixels)
    embeds, captions, groups = [], [], []
    if pool.captions is not None:
        embeds.append(image_head(model, dense.mean((-2, -1))))
        captions += [pool.captions[int(i)] for i in pick]
        groups += captions[-len(pick) :]
    owners, cells = [], []
    for b, i in enumerate(pick.tolist()):
        for region_cells, caption, group in pool.regions[i]:
            owners.append(b)
            cells.append(region_cells[:, ::-1] if flip[b] else region_cells)
            captions.append(caption)
            groups.append(group)
    if cells:
        cells_t = torch.from_numpy(np.ascontiguousarray(np.stack(cells)))
        embeds.append(region_embeddings(model, dense, torch.tensor(owners), cells_t))
    return torch.cat(embeds), captions, groups


def train_clip(
    model,
    pools: list,
    cfg: CLIPTrainConfig,
    *,
    mean,
    std,
    tokenize,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` (an open_clip CLIP) in place.

    Args:
        pools: :class:`ImagePool` / :class:`RegionPool` (one per image size); each step
            draws ``cfg.batch_sizes[i]`` images of pool i (random horizontal flips) and
            contrasts all their pairs in one batch.
        tokenize: captions -> token ids.
    Returns:
        the loss of every step.
    """
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / max(cfg.warmup, 1))
            * 0.5
            * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
        ),
    )
    losses = []
    for _ in tqdm(range(cfg.steps), desc="training CLIP", disable=not progress, file=sys.stderr):
        image_embeds, captions, groups = [], [], []
        for pool, batch in zip(pools, cfg.batch_sizes, strict=True):
            pick = torch.randint(len(pool.images), (batch,), generator=generator)
            flip = torch.rand(batch, generator=generator) < 0.5
            embeds, pool_captions, pool_groups = _pool_pairs(model, pool, pick, flip, mean, std)
            image_embeds.append(embeds)
            captions += pool_captions
            groups += pool_groups
        text_embeds = model.encode_text(tokenize(captions))
        loss = contrastive_loss(torch.cat(image_embeds), text_embeds, model.logit_scale, groups)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def zero_shot_accuracy(
    model, images: torch.Tensor, labels: np.ndarray, class_embeddings: torch.Tensor, *, mean, std
) -> np.ndarray:
    """Per-image correctness of nearest-text-embedding classification (bool array)."""
    predictions = []
    for start in range(0, len(images), 256):
        embeds = F.normalize(
            model.encode_image(normalise(images[start : start + 256], mean, std)), dim=-1
        )
        predictions.append((embeds @ class_embeddings.T).argmax(1))
    return torch.cat(predictions).numpy() == np.asarray(labels)


@torch.no_grad()
def region_zero_shot_accuracy(
    model, pool: RegionPool, labels: list[list[int]], class_embeddings: torch.Tensor, *, mean, std
) -> np.ndarray:
    """Per-region correctness of nearest-text-embedding classification of the regions of
    ``pool`` (``labels``: the class of each region, per scene), pooled as in training."""
    correct = []
    for start in range(0, len(pool.images), 32):
        dense = model.visual.trunk.forward_features(
            normalise(pool.images[start : start + 32], mean, std)
        )
        owners, cells, truth = [], [], []
        for b, (regions, classes) in enumerate(
            zip(pool.regions[start : start + 32], labels[start : start + 32], strict=True)
        ):
            for (region_cells, _, _), label in zip(regions, classes, strict=True):
                owners.append(b)
                cells.append(region_cells)
                truth.append(label)
        if not cells:
            continue
        embeds = region_embeddings(
            model, dense, torch.tensor(owners), torch.from_numpy(np.stack(cells))
        )
        predicted = (F.normalize(embeds, dim=-1) @ class_embeddings.T).argmax(1).numpy()
        correct.append(predicted == np.asarray(truth))
    return np.concatenate(correct) if correct else np.zeros(0, dtype=bool)
