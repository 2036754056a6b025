"""Context-aware text for the classifiers, all optional and off in the official model:

- :class:`LearnableContext`: DenseCLIP's pre-model prompting (CoOp's learnable context):
  ``[SOT] ctx_1 .. ctx_N name . [EOT]`` through the frozen text tower, gradients reach ctx.
- :class:`VisualContextDecoder`: DenseCLIP's post-model prompting: the class embeddings attend
  to the image's visual tokens and are updated ``t' = t + gamma * dec(t, v)`` (eq. 5-6).
- :class:`ContentDependentTransfer`: MAFT+'s CDT: the out-of-vocabulary classifier attends to
  the dense CLIP features (keys with a sine positional encoding) and is updated residually.

The identity at initialisation of the last two (gamma 0 / a zero output projection) gives
exactly the baseline's outputs; tests check it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.modeling.position_encoding import sine_position_encoding

PLACEHOLDER = "X"  # CoOp's stand-in token for a context vector


class LearnableContext(nn.Module):
    """N learned context vectors in the frozen text tower's token space (DenseCLIP uses N = 8,
    CoOp's initialisation N(0, 0.02)). Replaces the prompt templates: a synonym's embedding is
    the tower's output for ``[SOT] ctx_1 .. ctx_N synonym . [EOT]``."""

    def __init__(self, token_width: int, num_context: int = 8, init_std: float = 0.02) -> None:
        super().__init__()
        if num_context < 1:
            raise ValueError(f"learnable context needs at least 1 vector, got {num_context}")
        self.num_context = num_context
        self.context = nn.Parameter(torch.randn(num_context, token_width) * init_std)

    def prompts(self, texts: list[str]) -> list[str]:
        """The texts as prompts with one placeholder token per context vector."""
        stand_in = " ".join([PLACEHOLDER] * self.num_context)
        return [f"{stand_in} {text}." for text in texts]

    def tokens(self, backbone, texts: list[str]) -> torch.Tensor:
        """(N, context length) token ids of :meth:`prompts`; ValueError when the tokenizer
        does not make each placeholder one token (it must, to be replaced)."""
        tokens = backbone.tokenize(self.prompts(texts))
        single = backbone.tokenize([PLACEHOLDER])[0, 1]
        if not bool((tokens[:, 1 : 1 + self.num_context] == single).all()):
            raise ValueError("the tokenizer splits the context placeholder: cannot insert context")
        return tokens

    def forward(self, backbone, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (S, context) from :meth:`tokens` -> (S, D) text embeddings, L2-normalised,
        with gradients for the context vectors only."""
        eot = tokens.argmax(dim=-1)
        length = int(eot.max().item()) + 1
        with torch.no_grad():
            embedded = backbone.clip.token_embedding(tokens[:, :length])
        context = self.context.to(embedded.dtype)[None].expand(len(tokens), -1, -1)
        embedded = torch.cat([embedded[:, :1], context, embedded[:, 1 + self.num_context :]], dim=1)
        return F.normalize(backbone.text_tower(embedded, eot), dim=-1)


class _PreNormDecoderLayer(nn.Module):
    """Self-attention among the class tokens, cross-attention to the visual tokens, MLP; each
    pre-norm with a residual (DenseCLIP's ``TransformerDecoderLayer``)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(width),
            nn.LayerNorm(width),
            nn.LayerNorm(width),
        )
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * 4), nn.GELU(), nn.Linear(width * 4, width)
        )

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = self.norm1(x)
        x = x + self.self_attn(q, q, q, need_weights=False)[0]
        x = x + self.cross_attn(self.norm2(x), memory, memory, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class VisualContextDecoder(nn.Module):
    """DenseCLIP's context decoder: text (B, K, D) attends to visual tokens (B, N, D) (the
    image's global embedding and its per-location CLIP embeddings) through ``layers`` pre-norm
    transformer decoder layers of ``width``; returns ``t + gamma * out`` (B, K, D), gamma a
    learned per-channel scale starting at ``gamma_init`` (DenseCLIP: 1e-4). No positional
    information on the class tokens: permuting the classes permutes the output."""

    def __init__(
        self,
        embed_dim: int,
        *,
        layers: int = 3,
        width: int = 256,
        heads: int = 4,
        gamma_init: float = 1e-4,
    ) -> None:
        super().__init__()
        self.memory_proj = nn.Sequential(
            nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width), nn.LayerNorm(width)
        )
        self.text_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.layers = nn.ModuleList(_PreNormDecoderLayer(width, heads) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))
        self.gamma = nn.Parameter(torch.full((embed_dim,), float(gamma_init)))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """text (K, D) or (B, K, D); visual (B, N, D) -> (B, K, D)."""
        if text.dim() == 2:
            text = text[None].expand(visual.shape[0], -1, -1)
        memory = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.layers:
            x = layer(x, memory)
        return text + self.gamma * self.out_proj(x)


class ContentDependentTransfer(nn.Module):
    """MAFT+'s content-dependent transfer: per image, the text classifier (queries) attends to
    the dense CLIP embeddings (keys = embeddings + a sine positional encoding, values =
    embeddings) in one multi-head cross-attention, added residually. The attention's output
    projection starts at zero, so an untrained CDT is the identity."""

    def __init__(self, embed_dim: int, *, heads: int = 8) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"CDT needs an even embedding size, got {embed_dim}")
        self.attention = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)

    def forward(self, text: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """text (K, D) or (B, K, D); dense (B, D, h, w) per-location CLIP embeddings ->
        (B, K, D)."""
        batch = dense.shape[0]
        if text.dim() == 2:
            text = text[None].expand(batch, -1, -1)
        position = sine_position_encoding(dense, dense.shape[1] // 2).to(dense.dtype)
        keys = (dense + position).flatten(2).transpose(1, 2)
        values = dense.flatten(2).transpose(1, 2)
        return text + self.attention(text, keys, values, need_weights=False)[0]


class TextContext(nn.Module):
    """The switched-on parts of a :class:`ovseg.config.TextContextConfig` (None for the rest):
    ``context`` (learned context), ``visual_decoder`` (in-vocabulary text from the image),
    ``cdt`` (out-of-vocabulary text from the image) and ``pixel_proj`` (a 1x1 convolution of the
    pixel decoder's mask features to the CLIP space, for the pixel-text auxiliary loss: the
    CLIP is frozen here, so that loss trains the pixel decoder through it)."""

    def __init__(self, cfg, *, token_width: int, embed_dim: int, mask_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.context = (
            LearnableContext(token_width, cfg.learnable_context) if cfg.learnable_context else None
        )
        self.visual_decoder = None
        if cfg.visual_context_layers:
            self.visual_decoder = VisualContextDecoder(
                embed_dim,
                layers=cfg.visual_context_layers,
                width=cfg.visual_context_width,
                heads=cfg.visual_context_heads,
                gamma_init=cfg.visual_context_gamma,
            )
        self.cdt = ContentDependentTransfer(embed_dim, heads=cfg.cdt_heads) if cfg.cdt else None
        self.pixel_proj = (
            nn.Conv2d(mask_dim, embed_dim, 1) if cfg.pixel_text_loss_weight > 0 else None
        )

    @property
    def needs_clip_pixels(self) -> bool:
        """Whether classifying needs the per-location CLIP embeddings of the image."""
        return self.visual_decoder is not None or self.cdt is not None

    def in_vocab_text(self, text: torch.Tensor, clip_pixels: torch.Tensor | None):
        """(S, D) classifier -> (B, S, D) with the visual-context decoder (visual tokens: the
        image's mean CLIP embedding, then every location's), else unchanged."""
        if self.visual_decoder is None:
            return text
        tokens = clip_pixels.flatten(2).transpose(1, 2)  # (B, h*w, D)
        visual = torch.cat([F.normalize(tokens.mean(1, keepdim=True), dim=-1), tokens], dim=1)
        return self.visual_decoder(text, visual)

    def out_vocab_text(self, text: torch.Tensor, clip_pixels: torch.Tensor | None):
        """(S, D) classifier -> (B, S, D) after CDT, else unchanged."""
        return text if self.cdt is None else self.cdt(text, clip_pixels)
