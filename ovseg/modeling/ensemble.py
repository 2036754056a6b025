"""FC-CLIP's geometric ensemble of in-vocabulary and out-of-vocabulary class probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def geometric_ensemble(
    in_vocab_logits: torch.Tensor,
    out_vocab_logits: torch.Tensor,
    seen: torch.Tensor,
    *,
    alpha: float = 0.4,
    beta: float = 0.8,
) -> torch.Tensor:
    """Combine the two classifiers per class; the void probability comes from in-vocab only.

    Args:
        in_vocab_logits: (..., K+1) decoder logits, void last.
        out_vocab_logits: (..., K+1) mask-pooled CLIP logits, void last.
        seen: (K,) bool, True where the class (a synonym of it) was in the training vocabulary.
        alpha: out-of-vocabulary exponent for seen classes; beta: for unseen classes.
    Returns:
        (..., K+1) log(P + 1e-8) where P = [softmax(z) * (1 - p_void), p_void] and
        z_c = log(p_in^(1-w) * p_out^w) with w = alpha if seen else beta.
    """
    log_p_in = F.log_softmax(in_vocab_logits[..., :-1], dim=-1)
    log_p_out = F.log_softmax(out_vocab_logits[..., :-1], dim=-1)
    seen = seen.to(device=log_p_in.device, dtype=torch.bool)
    # log(p_in^(1-w) * p_out^w) in log space: the official code takes the log of a product of
    # probabilities, which underflows to -inf (and NaN after the softmax) when the classifiers
    # disagree by a logit gap above ~100; elsewhere the values agree to float rounding.
    weight = torch.where(seen, log_p_in.new_tensor(alpha), log_p_in.new_tensor(beta))
    z = (1 - weight) * log_p_in + weight * log_p_out
    p_void = F.softmax(in_vocab_logits, dim=-1)[..., -1:]
    probs = torch.cat([z.softmax(-1) * (1.0 - p_void), p_void], dim=-1)
    return torch.log(probs + 1e-8)
