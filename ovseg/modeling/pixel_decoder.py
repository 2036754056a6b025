"""Mask2Former's multi-scale deformable-attention pixel decoder (MSDeformAttnPixelDecoder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.modeling.cpu_inference import cpu_inference_applies
from ovseg.modeling.deformable_attention import MultiScaleDeformableAttention
from ovseg.modeling.position_encoding import sine_position_encoding


class ConvNorm(nn.Conv2d):
    """Conv2d followed by a norm and an optional ReLU (keys ``weight`` and ``norm.*``)."""

    def __init__(self, *args, norm: nn.Module, relu: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x, inplace=True) if self.relu else x


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention, then a ReLU feed-forward network.

    At CPU inference the feed-forward block (with its residual sum and norm) runs
    ``feed_forward_tokens`` tokens at a time, so its (tokens, ffn_dim) hidden layer stays in
    cache instead of going through memory (46 MB at 640 x 864). Per token the same sums (fp32:
    bit-identical here); the int8 path's dynamic quantization then scales each block's
    activations on their own range instead of the whole map's. The whole pixel decoder at
    640 x 864, 2 threads, Zen 4: fp32 1.28 -> 1.18 s, int8 0.74 -> 0.64 s.
    """

    feed_forward_tokens = 1024

    def __init__(
        self, d_model: int, ffn_dim: int, num_levels: int, num_heads: int, num_points: int
    ) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(d_model, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        tokens, block = src.shape[1], self.feed_forward_tokens
        if tokens <= block or not cpu_inference_applies(src):
            return self._feed_forward(src)
        out = torch.empty_like(src)
        for start in range(0, tokens, block):
            out[:, start : start + block] = self._feed_forward(src[:, start : start + block])
        return out

    def _feed_forward(self, src: torch.Tensor) -> torch.Tensor:
        return self.norm2(src + self.linear2(F.relu(self.linear1(src), inplace=True)))


class DeformableTransformer(nn.Module):
    """Holds the level embedding and the encoder (keys ``transformer.*``)."""

    def __init__(
        self,
        d_model: int,
        ffn_dim: int,
        num_layers: int,
        num_levels: int,
        num_heads: int,
        num_points: int,
    ) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        self.encoder = nn.Module()  # a plain holder: keys transformer.encoder.layers.*
        self.encoder.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, ffn_dim, num_levels, num_heads, num_points)
            for _ in range(num_layers)
        )
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)


def reference_points(
    spatial_shapes: list[tuple[int, int]], batch: int, device: torch.device
) -> torch.Tensor:
    """Normalised (x, y) pixel centres of every token, shared by all levels: (B, N, L, 2)."""
    points = []
    for height, width in spatial_shapes:
        # arange + 0.5 equals the official linspace(0.5, n - 0.5, n) bit for bit, and keeps
        # the map size symbolic when the graph is exported (linspace fixes it).
        ref_y, ref_x = torch.meshgrid(
            torch.arange(height, dtype=torch.float32, device=device) + 0.5,
            torch.arange(width, dtype=torch.float32, device=device) + 0.5,
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / width, ref_y.reshape(-1) / height), -1))
    ref = torch.cat(points, 0)[None, :, None, :]
    return ref.expand(batch, -1, len(spatial_shapes), -1)


class PixelDecoder(nn.Module):
    """Backbone pyramid -> per-pixel mask features (stride 4) and three multi-scale maps.

    Encoder levels run low to high resolution: res5, res4, res3; one FPN step adds res2.
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        *,
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_encoder_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        encoder_ffn_dim: int = 1024,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        self.encoder_features = ["res5", "res4", "res3"]
        self.conv_dim = conv_dim
        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels[name], conv_dim, kernel_size=1),
                nn.GroupNorm(num_groups, conv_dim),
            )
            for name in self.encoder_features
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.transformer = DeformableTransformer(
            conv_dim,
            encoder_ffn_dim,
            num_encoder_layers,
            len(self.encoder_features),
            num_heads,
            num_points,
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        self.mask_dim = mask_dim
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.constant_(self.mask_features.bias, 0)
        # One FPN level (stride 8 -> 4): lateral 1x1 on res2, output 3x3.
        self.adapter_1 = ConvNorm(
            in_channels["res2"],
            conv_dim,
            kernel_size=1,
            bias=False,
            norm=nn.GroupNorm(num_groups, conv_dim),
        )
        self.layer_1 = ConvNorm(
            conv_dim,
            conv_dim,
            kernel_size=3,
            padding=1,
            bias=False,
            norm=nn.GroupNorm(num_groups, conv_dim),
            relu=True,
        )
        for conv in (self.adapter_1, self.layer_1):
            nn.init.kaiming_uniform_(conv.weight, a=1)
        self.autocast_inside = False  # see forward

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """features res2..res5 -> mask_features (B, mask_dim, H/4, W/4) and
        [maps at strides 32, 16, 8] each (B, conv_dim, H/s, W/s), float32.

        Runs in fp32 under autocast unless ``autocast_inside`` (the int8 path sets it where
        bf16 is native): then its convolutions, and the projections and feed-forward layers
        that int8 does not quantize, run in autocast's precision while the token stream
        between layers, the norms and the deformable attention's sampling offsets and weights
        stay fp32. (All-bf16, with bf16 projections, moved a segment of the official tiny
        parity model: 81% semantic agreement with fp32 where the goal is 99%.)"""
        if self.autocast_inside:
            return self._forward(features)
        with torch.autocast(device_type=features["res2"].device.type, enabled=False):
            return self._forward({name: x.float() for name, x in features.items()})

    def _forward(self, features):
        tokens, positions, spatial_shapes = [], [], []
        for level, name in enumerate(self.encoder_features):
            x = features[name]
            src = self.input_proj[level](x)
            pos = sine_position_encoding(x, self.conv_dim // 2)
            spatial_shapes.append((src.shape[-2], src.shape[-1]))
            tokens.append(src.flatten(2).transpose(1, 2))
            positions.append(
                pos.flatten(2).transpose(1, 2) + self.transformer.level_embed[level].view(1, 1, -1)
            )
        src = torch.cat(tokens, 1).float()  # the token stream stays fp32 under autocast
        pos = torch.cat(positions, 1)
        batch = src.shape[0]
        refs = reference_points(spatial_shapes, batch, src.device)
        for layer in self.transformer.encoder.layers:
            src = layer(src, pos, refs, spatial_shapes)
        # Channels-last views of the tokens (no copy), the layout of the backbone's maps: the
        # top-down resize and the sum with the res2 lateral then run in one layout.
        maps = [
            z.reshape(batch, h, w, -1).permute(0, 3, 1, 2)
            for z, (h, w) in zip(
                src.split([h * w for h, w in spatial_shapes], dim=1), spatial_shapes, strict=True
            )
        ]
        lateral = self.adapter_1(features["res2"])
        top_down = F.interpolate(
            maps[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
        )
        # in place where the types agree (56 MB less at short side 800); the same values
        summed = lateral.add_(top_down) if lateral.dtype == top_down.dtype else lateral + top_down
        finest = self.layer_1(summed)
        return self.mask_features(finest).float(), [level.float() for level in maps]
