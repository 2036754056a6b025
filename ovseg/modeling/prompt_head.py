"""The prompt head: SAM's prompt encoder and mask decoder on the frozen CLIP's features.

SAM-CLIP merges SAM into one backbone by distillation; ovseg does it the FC-CLIP way, with the
CLIP frozen: a small trainable neck turns the frozen ConvNeXt's multi-scale maps into a
stride-16 image embedding, and segment-anything's ``PromptEncoder`` + ``MaskDecoder`` (sizes by
config) predict masks for points and boxes from it. One image pass then serves the panoptic
output, promptable masks and their open-vocabulary labels (mask pooling of the same CLIP map).
The model part lives here (tensors in, tensors out); :mod:`ovseg.sam.prompt_head` turns an
image's prompts into masks with it.

Coordinates follow segment-anything: pixels of the network input (the resized image), a
point's centre at +0.5, normalised by the padded input size; the dense positional encoding is
computed for the embedding's own size, so any padded input size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.config import PromptHeadConfig

LEVEL_OF_STRIDE = {4: "res2", 8: "res3", 16: "res4", 32: "res5"}


class PromptNeck(nn.Module):
    """Frozen multi-scale maps -> (B, C, H/s, W/s): per level a 1x1 convolution and
    LayerNorm2d to C channels, resized to the embedding stride s and summed, then a 3x3
    convolution and LayerNorm2d (the shape of SAM's ViT neck)."""

    def __init__(self, channels: dict[str, int], embed_dim: int) -> None:
        from segment_anything.modeling.common import LayerNorm2d

        super().__init__()
        self.in_features = tuple(channels)
        self.lateral = nn.ModuleDict(
            {
                name: nn.Sequential(nn.Conv2d(c, embed_dim, 1, bias=False), LayerNorm2d(embed_dim))
                for name, c in channels.items()
            }
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, 3, padding=1, bias=False), LayerNorm2d(embed_dim)
        )

    def forward(self, features: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        total = 0
        for name in self.in_features:
            x = self.lateral[name](features[name].float())
            if x.shape[-2] > size[0]:  # finer maps are averaged down, coarser ones upsampled
                x = F.interpolate(x, size=size, mode="area")
            elif tuple(x.shape[-2:]) != tuple(size):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            total = total + x
        return self.fuse(total)


class PromptDecoder(nn.Module):
    """SAM's ``PromptEncoder`` + ``MaskDecoder`` called with each image's own sizes. Subclasses
    set ``prompt_encoder``, ``mask_decoder``, ``mask_stride`` (pixels of the input per mask
    cell) and ``box_embed`` (an ``nn.Embedding(1, C)`` or None) and give ``embed_image``."""

    mask_stride: int

    def encode_prompts(
        self,
        points: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        *,
        input_hw: tuple[int, int],
        embedding_hw: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's prompt encoding for an input of ``input_hw`` (padded, pixels) and an
        embedding of ``embedding_hw``: ``PromptEncoder.forward`` with the sizes per call.

        Args:
            points: (N, P, 2) x, y network-input pixels; point_labels: (N, P) 1 / 0, -1 for
                padding; boxes: (N, 4) x0, y0, x1, y1; mask_inputs: (N, 1, 4h, 4w) logits.
        Returns:
            sparse (N, T, C) and dense (N, C, h, w) embeddings.
        """
        encoder = self.prompt_encoder
        batch = next(t.shape[0] for t in (points, boxes, mask_inputs) if t is not None)
        device = encoder.no_mask_embed.weight.device
        sparse = [torch.empty((batch, 0, encoder.embed_dim), device=device)]
        if points is not None:
            labels = point_labels
            if boxes is None:  # SAM pads a not-a-point when there is no box
                points = torch.cat([points, points.new_zeros((batch, 1, 2))], dim=1)
                labels = torch.cat([labels, labels.new_full((batch, 1), -1)], dim=1)
            embedding = encoder.pe_layer.forward_with_coords(points + 0.5, input_hw)
            embedding = torch.where(
                (labels == -1)[..., None], encoder.not_a_point_embed.weight, embedding
            )
            embedding = embedding + torch.where(
                (labels == 0)[..., None], encoder.point_embeddings[0].weight, 0.0
            )
            embedding = embedding + torch.where(
                (labels == 1)[..., None], encoder.point_embeddings[1].weight, 0.0
            )
            sparse.append(embedding)
        if boxes is not None:
            corners = encoder.pe_layer.forward_with_coords(boxes.reshape(-1, 2, 2) + 0.5, input_hw)
            corners[:, 0] += encoder.point_embeddings[2].weight[0]
            corners[:, 1] += encoder.point_embeddings[3].weight[0]
            sparse.append(corners)
        if mask_inputs is not None:
            dense = encoder.mask_downscaling(mask_inputs)
        else:
            dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                batch, -1, *embedding_hw
            )
        if boxes is not None and self.box_embed is not None:
            cover = box_coverage(boxes, input_hw, embedding_hw)
            dense = dense + cover[:, None] * self.box_embed.weight.reshape(1, -1, 1, 1)
        return torch.cat(sparse, dim=1), dense

    def forward(
        self,
        image_embedding: torch.Tensor,
        *,
        input_hw: tuple[int, int],
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embedding (1, C, h, w) and N prompts -> mask logits (N, M, 4h, 4w)
        (stride ``mask_stride`` of the padded input) and predicted IoU (N, M); M = 3 with
        ``multimask`` (SAM's ambiguity-aware outputs) else 1."""
        embedding_hw = tuple(image_embedding.shape[-2:])
        sparse, dense = self.encode_prompts(
            points,
            point_labels,
            boxes,
            mask_inputs,
            input_hw=input_hw,
            embedding_hw=embedding_hw,
        )
        image_pe = self.prompt_encoder.pe_layer(embedding_hw).unsqueeze(0)
        return self.mask_decoder(
            image_embeddings=image_embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )


class PromptHead(PromptDecoder):
    """Neck + SAM ``PromptEncoder`` + SAM ``MaskDecoder`` (multimask: 3 masks + 1 single),
    plus, with ``dense_box``, a learned vector added to the dense prompt embedding in the cells
    a box covers (:func:`box_coverage`)."""

    def __init__(self, feature_channels: dict[str, int], cfg: PromptHeadConfig) -> None:
        from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

        super().__init__()
        dim = cfg.embed_dim
        self.embedding_stride = cfg.embedding_stride
        self.mask_stride = cfg.embedding_stride // 4  # the decoder upsamples 4x
        self.neck = PromptNeck({k: feature_channels[k] for k in cfg.in_features}, dim)
        # The sizes given here are unused: ovseg passes each image's own (see encode_prompts).
        self.prompt_encoder = PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=16,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=dim,
                mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_num_heads,
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        )
        self.box_embed = nn.Embedding(1, dim) if cfg.dense_box else None

    def embed_image(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone maps (res2..res5, (B, C_l, H/s, W/s)) -> image embedding (B, C, H/e,
        W/e), e = ``embedding_stride`` (the size of the backbone map of that stride)."""
        level = LEVEL_OF_STRIDE[self.embedding_stride]
        return self.neck(features, tuple(features[level].shape[-2:]))


def box_coverage(boxes: torch.Tensor, input_hw, embedding_hw) -> torch.Tensor:
    """The share of each embedding cell inside each box: boxes (N, 4) x0, y0, x1, y1 in pixels
    of an input of ``input_hw`` -> (N, h, w) in [0, 1] for an embedding of ``embedding_hw``
    (cell (i, j) spans pixels [j s_x, (j + 1) s_x) x [i s_y, (i + 1) s_y))."""
    (height, width), (h, w) = input_hw, embedding_hw
    device = boxes.device

    def overlap(low, high, cells, size):
        step = size / cells
        start = torch.arange(cells, device=device, dtype=torch.float32) * step
        inside = torch.minimum(high[:, None], start + step) - torch.maximum(low[:, None], start)
        return (inside / step).clamp(0, 1)

    x = overlap(boxes[:, 0], boxes[:, 2], w, width)
    y = overlap(boxes[:, 1], boxes[:, 3], h, height)
    return y[:, :, None] * x[:, None, :]


def head_input_channels(model) -> dict[str, int]:
    """The maps a prompt head can read from an FC-CLIP model's image pass, by name: the frozen
    CLIP's res2..res5 and the pixel decoder's stride-4 ``mask_features``."""
    return {**model.backbone.feature_channels, "mask_features": model.pixel_decoder.mask_dim}


@torch.no_grad()
def head_inputs(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The maps of :func:`head_input_channels` for normalised, padded images (B, 3, H, W)."""
    features = model.backbone(images)
    mask_features, _ = model.pixel_decoder(features)
    return {**features, "mask_features": mask_features}


def build_prompt_head(feature_channels: dict[str, int], cfg: PromptHeadConfig) -> PromptHead:
    """The prompt head over maps of ``feature_channels`` (name -> channels, see
    :func:`head_input_channels`); ValueError for an input it lacks."""
    if cfg.embedding_stride not in (8, 16, 32):
        raise ValueError(
            f"prompt_head.embedding_stride must be 8, 16 or 32, got {cfg.embedding_stride}"
        )
    missing = [name for name in cfg.in_features if name not in feature_channels]
    if missing:
        raise ValueError(
            f"prompt_head.in_features {missing} are not maps of the image pass "
            f"({', '.join(feature_channels)})"
        )
    return PromptHead(feature_channels, cfg)
