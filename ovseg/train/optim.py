"""AdamW parameter groups (no weight decay on norms and embeddings) and the LR schedule."""

from __future__ import annotations

from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters only (the frozen CLIP is left out); weight decay 0 for
    normalisation layers and nn.Embedding weights, as in the official recipe."""
    no_decay_types = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if isinstance(module, no_decay_types):
                no_decay.append(parameter)
            else:
                decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_poly(
    iteration: int, *, max_iters: int, warmup_iters: int, warmup_factor: float, power: float = 0.9
) -> float:
    """LR multiplier: linear warm-up from ``warmup_factor`` to 1, then (1 - t/T)^power."""
    poly = (1 - min(iteration, max_iters) / max_iters) ** power
    if iteration >= warmup_iters or warmup_iters == 0:
        return poly
    alpha = iteration / warmup_iters
    return poly * (warmup_factor * (1 - alpha) + alpha)
