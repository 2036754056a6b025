"""The frozen open_clip ConvNeXt CLIP: multi-scale image features, dense CLIP features, the
CLIP image head for mask-pooled features, and the text tower."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging

import torch
import torch.nn.functional as F
from torch import nn


def build_open_clip_model(
    model_name: str,
    *,
    pretrained: str | None = None,
    model_config_file: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Build an open_clip CLIP model, from a name open_clip knows or from a config JSON."""
    import open_clip

    if model_config_file is not None:
        with open(model_config_file, encoding="utf-8") as f:
            model_cfg = json.load(f)
        model_cfg = model_cfg.get("model_cfg", model_cfg)
        if pretrained:
            raise ValueError("a CLIP built from a config file cannot take a pretrained tag")
        with torch.device(device):
            return open_clip.model.CLIP(**model_cfg)
    if model_name not in open_clip.list_models():
        raise ValueError(
            f"open_clip does not know the model '{model_name}': set clip.model_config_file "
            "to its open_clip JSON config"
        )
    if pretrained:
        _check_clip_weights_reachable(model_name, pretrained)
    # Without a tag open_clip warns that it initialised randomly; ovseg loads its own weights
    # file right after building, so that warning would only mislead.
    with _without_root_warnings(enabled=not pretrained):
        try:
            return open_clip.create_model(model_name, pretrained=pretrained or None, device=device)
        except (OSError, RuntimeError, ValueError) as error:
            if not pretrained:
                raise
            raise CLIPWeightsError(
                _clip_weights_message(model_name, pretrained, f"the download failed ({error})")
            ) from error


class CLIPWeightsError(RuntimeError):
    """The open_clip pretrained weights a config names cannot be had; says what to do."""


def _clip_weights_message(model_name: str, tag: str, problem: str) -> str:
    return (
        f"cannot get the CLIP weights {model_name} / {tag} from the Hugging Face hub: "
        f"{problem}. Offline, start from a weights file that holds the CLIP instead: "
        "--init-weights FILE (an FC-CLIP checkpoint; or, for --config synthetic_tiny, the "
        "shipped ovseg/assets/synthetic_tiny/synthetic_tiny.safetensors), or put the open_clip "
        "weights in the Hugging Face cache"
    )


def _check_clip_weights_reachable(model_name: str, tag: str) -> None:
    """Fail at once, with what to do, when the tag's weights are not cached and cannot be
    downloaded (HF_HUB_OFFLINE set, or no route to the hub) instead of after a minute of
    retries. With a proxy configured the download is simply tried."""
    import os
    import socket

    import open_clip

    repo = (open_clip.get_pretrained_cfg(model_name, tag) or {}).get("hf_hub", "").strip("/")
    if not repo:
        return  # a URL download: open_clip's own errors apply
    from huggingface_hub import try_to_load_from_cache

    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo, filename), str):
            return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise CLIPWeightsError(
            _clip_weights_message(model_name, tag, "they are not cached and HF_HUB_OFFLINE is set")
        )
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    try:
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError as error:
        raise CLIPWeightsError(
            _clip_weights_message(
                model_name, tag, f"they are not cached and the hub cannot be reached ({error})"
            )
        ) from error


@contextlib.contextmanager
def _without_root_warnings(enabled: bool):
    logger = logging.getLogger()
    level = logger.level
    if enabled:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class InPlaceGELU(nn.Module):
    """GELU that overwrites its input when no gradient is being recorded (the frozen
    trunk's inference): the same values as ``F.gelu``, without allocating (and page-faulting)
    a second copy of the MLP's widest activation. With autograd recording it is plain GELU."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.gelu(x, approximate=self.approximate)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)


def _gelu_in_place(stages: nn.Module) -> None:
    """Give every ConvNeXt block MLP in ``stages`` an :class:`InPlaceGELU` (GELU modules of
    torch or timm, exact or tanh-approximated; other activations are left alone)."""
    for module in stages.modules():
        act = getattr(module, "act", None)
        if isinstance(act, InPlaceGELU) or type(act).__name__ not in ("GELU", "GELUTanh"):
            continue
        default = "tanh" if type(act).__name__ == "GELUTanh" else "none"
        module.act = InPlaceGELU(getattr(act, "approximate", default))


class CLIPText(nn.Module):
    """The frozen text half of an open_clip CLIP: its tokenizer, text tower, and a fingerprint
    of the text weights. Always in eval mode, never trained. :class:`CLIPBackbone` adds the
    image trunk; a query of text alone needs only this (:func:`build_clip_text`).

    Attributes derived from the built model: ``embed_dim`` (CLIP space) and
    ``text_context_length``.
    """

    def __init__(self, clip_model: nn.Module, *, model_name: str = "custom") -> None:
        super().__init__()
        self.clip = clip_model
        self.model_name = model_name
        self.embed_dim = int(clip_model.text_projection.shape[-1])
        self.text_context_length = int(clip_model.positional_embedding.shape[0])
        for parameter in self.clip.parameters():
            parameter.requires_grad_(False)
        self.clip.eval()
        self._text_fingerprint: str | None = None

    def train(self, mode: bool = True) -> CLIPText:
        # The CLIP stays in eval mode whatever the rest of the model does.
        return super().train(False)

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, context) -> text embeddings (N, embed_dim), not normalised.

        The text tower is causal, so positions after the last end-of-text token cannot change
        the pooled token: the sequence is cut there (same values, much less work).
        """
        eot_positions = tokens.argmax(dim=-1)
        length = int(eot_positions.max().item()) + 1
        return self.text_tower(self.clip.token_embedding(tokens[:, :length]), eot_positions)

    def text_tower(self, token_embeddings: torch.Tensor, eot_positions: torch.Tensor):
        """The frozen text tower from token embeddings on: (N, L, width) embedded tokens (L at
        most the context length) and (N,) end-of-text positions -> (N, embed_dim), not
        normalised. Gradients reach ``token_embeddings`` (learned context vectors,
        :mod:`ovseg.modeling.text_context`); the tower's own weights stay frozen."""
        clip = self.clip
        length = token_embeddings.shape[1]
        x = token_embeddings + clip.positional_embedding[:length]
        attn_mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = clip.transformer(x, attn_mask=attn_mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_positions]
        projection = clip.text_projection
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (N, context) token ids with the model's tokenizer and context length."""
        return tokenize(self.model_name, texts, self.text_context_length)

    def text_fingerprint(self) -> str:
        """A short hash of the text tower's weights, so cached text embeddings follow weights."""
        if self._text_fingerprint is None:
            digest = hashlib.sha256(self.model_name.encode())
            for name, tensor in self.clip.state_dict().items():
                if name.startswith("visual."):
                    continue
                flat = tensor.detach().reshape(-1).float().cpu()
                sample = torch.cat(
                    [flat[:2048], flat[-2048:], flat[:: max(1, flat.numel() // 2048)]]
                )
                digest.update(name.encode())
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(sample.numpy().tobytes())
            self._text_fingerprint = digest.hexdigest()[:16]
        return self._text_fingerprint

    def reset_fingerprint(self) -> None:
        """Call after loading new weights."""
        self._text_fingerprint = None


class CLIPBackbone(CLIPText):
    """Frozen open_clip ConvNeXt CLIP: the text half (:class:`CLIPText`) and the image trunk.

    Attributes derived from the built model: ``feature_channels`` (res2..res5),
    ``dense_channels`` (the stride-32 map that is mask-pooled), ``embed_dim`` (CLIP space).
    """

    strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}

    def __init__(self, clip_model: nn.Module, *, model_name: str = "custom") -> None:
        trunk = getattr(getattr(clip_model, "visual", None), "trunk", None)
        if trunk is None or not hasattr(trunk, "stages") or not hasattr(trunk, "stem"):
            raise ValueError(f"'{model_name}' is not an open_clip timm ConvNeXt CLIP model")
        super().__init__(clip_model, model_name=model_name)
        channels = [
            info["num_chs"] for info in trunk.feature_info if info["module"].startswith("stages")
        ]
        self.feature_channels = dict(zip(("res2", "res3", "res4", "res5"), channels, strict=True))
        self.dense_channels = channels[-1]
        _gelu_in_place(trunk.stages)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) normalised -> res2..res5 (B, C_l, H/s, W/s) and clip_vis_dense."""
        trunk = self.clip.visual.trunk
        x = trunk.stem(images)
        features = {}
        for name, stage in zip(("res2", "res3", "res4", "res5"), trunk.stages, strict=True):
            x = stage(x)
            features[name] = x
        features["clip_vis_dense"] = trunk.norm_pre(x)
        return features

    @torch.no_grad()
    def project_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mask-pooled dense features (B, Q, C) -> CLIP image embeddings (B, Q, embed_dim).

        Runs the trunk head (pool over 1x1, LayerNorm2d) and CLIP's projection head, i.e. the
        CLIP image head applied after pooling.
        """
        batch, queries, channels = pooled.shape
        x = pooled.reshape(batch * queries, channels, 1, 1)
        x = self.clip.visual.trunk.head(x)
        x = self.clip.visual.head(x)
        return x.reshape(batch, queries, -1)


def build_clip_text(
    model_name: str,
    *,
    pretrained: str | None = None,
    model_config_file: str | None = None,
    device: str | torch.device = "cpu",
) -> CLIPText:
    """The text half of an open_clip CLIP (:func:`build_open_clip_model`'s arguments). Without
    ``pretrained`` it is built on the meta device and only the text half is allocated on
    ``device``, uninitialised: load its weights next (:func:`ovseg.checkpoint.load_state`);
    the image tower is never built. With ``pretrained`` the whole CLIP is built with the
    tag's weights and its image tower dropped."""
    if pretrained:
        clip = build_open_clip_model(model_name, pretrained=pretrained, device=device)
        clip.visual = None
        return CLIPText(clip, model_name=model_name)
    with torch.device("meta"):
        clip = build_open_clip_model(model_name, model_config_file=model_config_file, device="meta")
    clip.visual = None
    clip.to_empty(device=device)
    if clip.attn_mask is not None:  # a buffer no state dict holds: the causal mask, as open_clip
        length = clip.attn_mask.shape[0]
        clip.attn_mask = torch.full((length, length), float("-inf"), device=device).triu_(1)
    return CLIPText(clip, model_name=model_name)


def tokenize(model_name: str, texts: list[str], context_length: int) -> torch.Tensor:
    """Texts -> (N, context_length) int64 token ids: open_clip's tokenizer of ``model_name``
    when open_clip knows the name, else CLIP's BPE tokenizer (start 49406, end 49407, zero
    padding) at ``context_length``."""
    import open_clip

    if model_name in open_clip.list_models():
        return open_clip.get_tokenizer(model_name)(texts)
    return open_clip.tokenize(texts, context_length=context_length)


def longer_than_context(model_name: str, texts: list[str], context_length: int) -> list[bool]:
    """Per text: does it need more than ``context_length`` tokens (start and end included),
    so that :func:`tokenize` cuts it and the text tower reads only its first part?"""
    import open_clip

    longer = context_length + 1  # a text that fits leaves this position empty (0)
    if model_name in open_clip.list_models():
        tokens = open_clip.get_tokenizer(model_name)(texts, context_length=longer)
    else:
        tokens = open_clip.tokenize(texts, context_length=longer)
    return (tokens[:, context_length] != 0).tolist()
