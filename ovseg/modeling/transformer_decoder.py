"""FC-CLIP's masked-attention transformer decoder (Mask2Former with a CLIP-space class head)."""

from __future__ import annotations

import math
from functools import partial

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.modeling.cpu_inference import cpu_inference_applies, numba_threads_as_torch
from ovseg.modeling.mask_resize import resize_bilinear
from ovseg.modeling.position_encoding import sine_position_encoding


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(d_in, d_out)
            for d_in, d_out in zip(dims, dims[1:] + [output_dim], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def mask_pooling(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Average features inside each binarised mask (FC-CLIP's ``MaskPooling``).

    Args:
        features: (B, C, H, W).
        mask_logits: (B, Q, h, w); resized bilinearly to (H, W) first when sizes differ
            (:func:`ovseg.modeling.mask_resize.resize_bilinear`), then binarised at > 0.
    Returns:
        (B, Q, C); an empty mask gives a zero vector.

    FC-CLIP divides the binary masks by their areas before the product; here the sums are
    divided after it (the same value to float rounding, ~1e-7 relative), which spares a
    full-size pass. On CPU float32 inference the binary masks are made and multiplied a band
    of pixels at a time (:func:`_masked_sums_by_band`) and never exist at full size.
    """
    if mask_logits.shape[-2:] != features.shape[-2:]:
        mask_logits = resize_bilinear(mask_logits, tuple(features.shape[-2:]))
    if cpu_inference_applies(features, mask_logits) and {features.dtype, mask_logits.dtype} == {
        torch.float32
    }:
        summed, area = _masked_sums_by_band(features, mask_logits)
    else:
        with torch.no_grad():
            mask = (mask_logits > 0).to(features.dtype)
            area = mask.sum(dim=(-1, -2), dtype=torch.float32)  # (B, Q)
        summed = torch.einsum("bchw,bqhw->bqc", features, mask)
    return (summed / (area.unsqueeze(-1) + 1e-8)).to(summed.dtype)


def _masked_sums_by_band(
    features: torch.Tensor, mask_logits: torch.Tensor, *, band: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W), (B, Q, H, W) float32 -> the feature sums inside each mask (B, Q, C) and
    the mask areas (B, Q), ``band`` pixels at a time: each band's binary masks (Q x band, 2 MB
    for 250 queries) are written into one buffer that stays in cache and multiplied into the
    sums. The full-size binary masks (35 MB at 640 x 864) cost more to write into fresh
    memory than the product itself took to read them (13 of 40 ms here)."""
    batch, channels = features.shape[:2]
    queries = mask_logits.shape[1]
    summed = features.new_zeros((batch, queries, channels))
    area = features.new_zeros((batch, queries))
    binary = features.new_empty((queries, band))
    for b in range(batch):
        logits = mask_logits[b].reshape(queries, -1)
        pixels = features[b].reshape(channels, -1).T  # (HW, C): rows in channels-last maps
        for start in range(0, logits.shape[1], band):
            stop = min(start + band, logits.shape[1])
            chunk = binary[:, : stop - start]
            torch.gt(logits[:, start:stop], 0, out=chunk)
            area[b] += chunk.sum(-1)
            summed[b].addmm_(chunk, pixels[start:stop])
    return summed, area


@numba.njit(parallel=True, cache=True, nogil=True)
def _attention_bias(probabilities, out):
    """probabilities (R, S) float32 -> out (R, S): 0 where >= 0.5, -inf elsewhere, and 0 for
    the whole of a row that would block everything (Mask2Former's rule)."""
    rows, size = probabilities.shape
    for r in numba.prange(rows):
        line = probabilities[r]
        target = out[r]
        allowed = 0
        for s in range(size):
            if line[s] >= 0.5:
                target[s] = 0.0
                allowed += 1
            else:
                target[s] = -np.inf
        if allowed == 0:
            target[:] = 0.0


def attention_bias(attn_logits: torch.Tensor) -> torch.Tensor | None:
    """Mask logits at a level's size (B, Q, h, w) -> the additive attention mask (B, Q, h*w)
    float32 that ``scaled_dot_product_attention`` takes: 0 where the query may attend (mask
    probability >= 0.5, from torch's own sigmoid), -inf elsewhere, 0 everywhere for a query
    that would block everything. The same attention as :meth:`TransformerDecoder
    ._attention_mask`'s boolean mask, in one compiled pass instead of five full passes (and
    the boolean-to-float one inside the attention); CPU inference only: None elsewhere
    (float64, gradients, other devices, tracing). float32 ``attn_logits`` are overwritten with
    their sigmoid; bf16 / fp16 ones (autocast) are widened first."""
    if not cpu_inference_applies(attn_logits):
        return None
    probabilities = attn_logits.float().sigmoid_().flatten(2).contiguous()
    batch, queries, size = probabilities.shape
    out = np.empty((batch * queries, size), np.float32)
    with numba_threads_as_torch():
        _attention_bias(probabilities.view(-1, size).numpy(), out)
    return torch.from_numpy(out).view(batch, queries, size)


def _init_xavier(module: nn.Module) -> None:
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


def masked_cross_attention(
    attention: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    allowed: torch.Tensor,
) -> torch.Tensor:
    """``attention(query, key, value, attn_mask=~allowed repeated per head)`` with the module's
    own weights, without materialising a (B * heads, Q, HW) mask: the boolean mask is
    broadcast over heads inside ``scaled_dot_product_attention`` (what
    ``nn.MultiheadAttention`` does after building the per-head float mask).

    Args:
        query: (Q, B, C); key, value: (S, B, C) (sequence first, as nn.MultiheadAttention).
        allowed: (B, Q, S) bool, True where the query may attend, or the same as an
            additive float mask (0 or -inf, :func:`attention_bias`).
    Returns:
        (Q, B, C).
    """
    num_queries, batch, channels = query.shape
    heads = attention.num_heads
    w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attention.in_proj_bias.chunk(3)

    def split_heads(x, weight, bias):  # (L, B, C) -> (B, heads, L, C / heads)
        return F.linear(x, weight, bias).view(x.shape[0], batch, heads, -1).permute(1, 2, 0, 3)

    attended = F.scaled_dot_product_attention(
        split_heads(query, w_q, b_q),
        split_heads(key, w_k, b_k),
        split_heads(value, w_v, b_v),
        attn_mask=allowed.unsqueeze(1),
    )  # (B, heads, Q, C / heads)
    attended = attended.permute(2, 0, 1, 3).reshape(num_queries, batch, channels)
    return attention.out_proj(attended)


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads)
        self.norm = nn.LayerNorm(d_model)
        _init_xavier(self)

    def forward(self, queries, memory, *, allowed, memory_with_pos, query_pos):
        """queries (Q, B, C), memory (S, B, C) (the values), memory_with_pos (S, B, C) (the
        keys: memory + its position encoding, made once per level), allowed (B, Q, S) bool
        or the additive mask -> (Q, B, C)."""
        attended = masked_cross_attention(
            self.multihead_attn, queries + query_pos, memory_with_pos, memory, allowed
        )
        return self.norm(queries + attended)


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads)
        self.norm = nn.LayerNorm(d_model)
        _init_xavier(self)

    def forward(self, queries, *, query_pos):
        q = k = queries + query_pos
        return self.norm(queries + self.self_attn(q, k, value=queries, need_weights=False)[0])


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm = nn.LayerNorm(d_model)
        _init_xavier(self)

    def forward(self, x):
        return self.norm(x + self.linear2(F.relu(self.linear1(x), inplace=True)))


class TransformerDecoder(nn.Module):
    """Queries attend, layer by layer, to the pyramid levels (strides 32, 16, 8 in turn) inside
    the masks predicted by the previous layer; every prediction head gives masks and a
    CLIP-space class embedding per query. Nothing here depends on the vocabulary: class logits
    are the embeddings compared with a text classifier (``classification_logits``)."""

    num_levels = 3

    def __init__(
        self,
        *,
        in_channels: int = 256,
        mask_dim: int = 256,
        hidden_dim: int = 256,
        num_queries: int = 250,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        num_layers: int = 9,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        if in_channels != hidden_dim:
            raise ValueError("the pixel decoder's conv_dim must equal the decoder's hidden_dim")
        if mask_dim != hidden_dim:
            raise ValueError("mask_dim must equal hidden_dim (mask pooling adds them)")
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, num_heads) for _ in range(num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, num_heads) for _ in range(num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, ffn_dim) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.mask_pooling_proj = nn.Sequential(
            nn.LayerNorm(mask_dim), nn.Linear(mask_dim, mask_dim)
        )
        self.class_embed = MLP(hidden_dim, hidden_dim, embed_dim, 3)
        # In-vocabulary temperature (trainable), exp() clamped at 100 when used.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def prediction_heads(self, queries, mask_features, target_size, *, with_class=True):
        """queries (Q, B, C) -> class embeddings (B, Q, D) (None unless ``with_class``), mask
        logits (B, Q, H/4, W/4) and the attention mask (B, Q, h*w) bool, True where the query
        may attend, for a level of ``target_size`` (None when ``target_size`` is None)."""
        decoded = self.decoder_norm(queries).transpose(0, 1)
        mask_embed = self.mask_embed(decoded)
        mask_logits = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        class_embed = None
        if with_class:
            pooled = self.mask_pooling_proj(mask_pooling(mask_features, mask_logits))
            class_embed = self.class_embed(pooled + decoded)
        if target_size is None:
            return class_embed, mask_logits, None
        attn_logits = F.interpolate(
            mask_logits, size=target_size, mode="bilinear", align_corners=False
        )
        return class_embed, mask_logits, self._attention_mask(attn_logits)

    @staticmethod
    def _attention_mask(attn_logits: torch.Tensor) -> torch.Tensor:
        """Mask logits at a level's size (B, Q, h, w) -> (B, Q, h*w) bool, True where the
        query may attend (mask probability >= 0.5); a query whose mask blocks everything
        attends everywhere instead (Mask2Former). The same mask for every head."""
        allowed = (attn_logits.sigmoid().flatten(2) >= 0.5).detach()
        allowed[~allowed.any(-1)] = True
        return allowed

    def _attention_mask_only(self, queries, level_mask_features):
        """Inference shortcut for an intermediate layer: only its attention mask, computed at
        the level's size from mask features resized there first. Bilinear resizing is linear
        per channel, so resize(embed . features) == embed . resize(features): the same logits
        (to float rounding) as :meth:`prediction_heads` without the full-size mask product."""
        mask_embed = self.mask_embed(self.decoder_norm(queries).transpose(0, 1))
        attn_logits = torch.einsum("bqc,bchw->bqhw", mask_embed, level_mask_features)
        bias = attention_bias(attn_logits)
        return None, None, self._attention_mask(attn_logits) if bias is None else bias

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        mask_features: torch.Tensor,
        *,
        aux_classes: bool = True,
        aux_outputs: bool = True,
    ) -> dict[str, torch.Tensor | list]:
        """multi_scale_features: maps at strides 32, 16, 8 (B, C, h, w); mask_features
        (B, C, H/4, W/4). Returns pred_embeds (B, Q, D) and pred_masks (B, Q, H/4, W/4) of the
        last layer and aux_outputs: the earlier predictions (initial queries + all layers but
        the last), each a dict with the same keys. ``aux_classes=False`` skips the class head
        of the earlier predictions (their pred_embeds are None): inference needs only the
        last one, and the masks and final outputs are unchanged. ``aux_outputs=False``
        (inference) also skips the earlier full-size masks: aux_outputs is empty and each
        layer's attention mask is computed at its level's size (:meth:`_attention_mask_only`),
        equal to float rounding (a logit within ~1e-6 of 0 may flip its attention bit).
        """
        sources, keys, sizes = [], [], []  # keys: each level's memory + position, made once
        for level, feature in enumerate(multi_scale_features):
            sizes.append(feature.shape[-2:])
            position = sine_position_encoding(feature, feature.shape[1] // 2)
            sources.append(
                (feature.flatten(2) + self.level_embed.weight[level][None, :, None]).permute(
                    2, 0, 1
                )
            )
            keys.append(sources[-1] + position.flatten(2).permute(2, 0, 1))
        batch = sources[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        queries = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)

        if aux_outputs:
            heads = partial(self.prediction_heads, mask_features=mask_features)
        else:
            level_features = [
                F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False)
                for size in sizes
            ]

            def heads(queries, target_size, *, with_class):
                if target_size is None:  # the last layer: full-size masks and classes
                    return self.prediction_heads(queries, mask_features, None)
                return self._attention_mask_only(queries, level_features[sizes.index(target_size)])

        predictions = [heads(queries, target_size=sizes[0], with_class=aux_classes)]
        for i in range(self.num_layers):
            level = i % self.num_levels
            queries = self.transformer_cross_attention_layers[i](
                queries,
                sources[level],
                allowed=predictions[-1][2],
                memory_with_pos=keys[level],
                query_pos=query_pos,
            )
            queries = self.transformer_self_attention_layers[i](queries, query_pos=query_pos)
            queries = self.transformer_ffn_layers[i](queries)
            last = i == self.num_layers - 1
            predictions.append(
                heads(
                    queries,
                    target_size=None if last else sizes[(i + 1) % self.num_levels],
                    with_class=aux_classes or last,
                )
            )
        aux = [{"pred_embeds": e, "pred_masks": m} for e, m, _ in predictions[:-1]]
        return {
            "pred_embeds": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": aux if aux_outputs else [],
        }
