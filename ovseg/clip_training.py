"""Contrastive (CLIP) training of an open_clip model on image-caption pairs, and zero-shot
classification with it. Used to make a small CLIP where no pretrained one can be had."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class CLIPTrainConfig:
    steps: int = 1500
    batch_sizes: tuple[int, ...] = (8, 56)  # per step, from each pool of same-size images
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


def train_clip(
    model,
    pools: list[tuple],
    cfg: CLIPTrainConfig,
    *,
    mean,
    std,
    tokenize,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` (an open_clip CLIP) in place.

    Args:
        pools: (images (N, H, W, 3) uint8, captions, groups or None) per image size; each
            step draws ``cfg.batch_sizes[i]`` pairs from pool i (random horizontal flips).
            Pairs of one group are positives of each other (None: the caption is the group).
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
        for (images, pool_captions, pool_groups), batch in zip(pools, cfg.batch_sizes, strict=True):
            pick = torch.randint(len(pool_captions), (batch,), generator=generator)
            pixels = normalise(images[pick], mean, std)
            flip = torch.rand(batch, generator=generator) < 0.5
            pixels[flip] = pixels[flip].flip(-1)
            image_embeds.append(model.encode_image(pixels))
            captions += [pool_captions[int(i)] for i in pick]
            source = pool_groups if pool_groups is not None else pool_captions
            groups += [source[int(i)] for i in pick]
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
