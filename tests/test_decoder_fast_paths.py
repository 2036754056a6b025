"""The transformer decoder's CPU inference passes against the formulas they replace: the
attention bias against the boolean attention mask, mask pooling in bands against FC-CLIP's
``MaskPooling``."""

import pytest
import torch
import torch.nn.functional as F

from ovseg.modeling.transformer_decoder import (
    TransformerDecoder,
    _masked_sums_by_band,
    attention_bias,
    mask_pooling,
)


def fcclip_mask_pooling(features, mask_logits):
    """fc-clip/fcclip/modeling/transformer_decoder/fcclip_transformer_decoder.py MaskPooling."""
    if mask_logits.shape[-2:] != features.shape[-2:]:
        mask_logits = F.interpolate(
            mask_logits, size=features.shape[-2:], mode="bilinear", align_corners=False
        )
    mask = (mask_logits > 0).to(mask_logits.dtype)
    denorm = mask.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, mask / denorm)


def test_attention_bias_is_the_boolean_mask():
    logits = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(0)) * 3
    logits[0, 2] = -1.0  # blocks everything: attends everywhere instead
    logits[1, 4, 0, :3] = torch.tensor([0.0, -1e-8, -1e-3])  # at and near the threshold
    allowed = TransformerDecoder._attention_mask(logits.clone())
    bias = attention_bias(logits.clone())
    assert bias.shape == allowed.shape == (2, 6, 35) and bias.dtype == torch.float32
    expected = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
    torch.testing.assert_close(bias, expected, rtol=0, atol=0)
    assert (bias[0, 2] == 0).all()
    # the same attention as the boolean mask inside scaled_dot_product_attention
    q, k, v = (torch.randn(2, 8, n, 4) for n in (6, 35, 35))
    torch.testing.assert_close(
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(1)),
        F.scaled_dot_product_attention(q, k, v, attn_mask=allowed.unsqueeze(1)),
    )


def test_attention_bias_of_autocast_logits():
    logits = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(4))
    half = logits.to(torch.bfloat16)
    allowed = TransformerDecoder._attention_mask(half.float())
    bias = attention_bias(half)
    assert bias.dtype == torch.float32 and torch.equal(bias == 0, allowed)


def test_attention_bias_steps_aside_for_gradients_and_float64():
    assert attention_bias(torch.randn(1, 2, 3, 4, requires_grad=True)) is None
    assert attention_bias(torch.randn(1, 2, 3, 4, dtype=torch.float64)) is None


@pytest.mark.parametrize("channels_last", [False, True])
def test_mask_pooling_in_bands_equals_fcclip(channels_last):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 16, 30, 41, generator=generator)
    if channels_last:  # the pixel decoder's layout
        features = features.contiguous(memory_format=torch.channels_last)
    logits = torch.randn(2, 9, 30, 41, generator=generator)
    logits[1, 5] = -2.0  # an empty mask: a zero vector
    expected = fcclip_mask_pooling(features, logits)
    with torch.no_grad():
        found = mask_pooling(features, logits)
        summed, area = _masked_sums_by_band(features, logits, band=97)  # partial last band
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(summed / (area.unsqueeze(-1) + 1e-8), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(area, (logits > 0).sum((-1, -2)).float(), rtol=0, atol=0)
    assert (found[1, 5] == 0).all()
    # shrunk to the features' size first (FC-CLIP's CLIP-feature pooling)
    small = torch.randn(2, 16, 6, 8, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(
            mask_pooling(small, logits), fcclip_mask_pooling(small, logits), rtol=1e-5, atol=1e-6
        )


def test_mask_pooling_gradient_is_fcclips():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 5, 12, 10, generator=generator)
    grads = []
    for pool in (mask_pooling, fcclip_mask_pooling):
        features = torch.randn(1, 8, 12, 10, generator=torch.Generator().manual_seed(3))
        features.requires_grad_(True)
        (pool(features, logits) * torch.arange(8.0)).sum().backward()
        grads.append(features.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def detr_sine_encoding(batch, height, width, num_pos_feats, temperature=10000.0):
    """Mask2Former's PositionEmbeddingSine (normalize=True, no padding mask), the angles of
    every pixel and channel made at once."""
    import math

    ones = torch.ones(batch, height, width)
    y_embed, x_embed = ones.cumsum(1), ones.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x, pos_y = x_embed[:, :, :, None] / dim_t, y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


@pytest.mark.parametrize(("shape", "feats"), [((2, 256, 20, 27), 128), ((1, 8, 1, 5), 4)])
def test_sine_encoding_per_axis_is_bit_identical(shape, feats):
    from ovseg.modeling.position_encoding import sine_position_encoding

    found = sine_position_encoding(torch.zeros(shape), feats)
    expected = detr_sine_encoding(shape[0], shape[2], shape[3], feats)
    assert found.shape == expected.shape
    assert torch.equal(found, expected)


def test_pixel_decoder_feed_forward_in_blocks_equals_whole(monkeypatch):
    from ovseg.config import load_config
    from ovseg.modeling.fcclip import build_model
    from ovseg.modeling.pixel_decoder import DeformableEncoderLayer

    torch.manual_seed(0)
    model = build_model(load_config("fcclip_tiny_test")).eval()
    pixels = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(5))
    calls = []
    original = DeformableEncoderLayer._feed_forward
    monkeypatch.setattr(
        DeformableEncoderLayer,
        "_feed_forward",
        lambda self, src: calls.append(src.shape[1]) or original(self, src),
    )
    with torch.no_grad():
        features = model.backbone(pixels)
        whole_mask, whole_levels = model.pixel_decoder(features)
        monkeypatch.setattr(DeformableEncoderLayer, "feed_forward_tokens", 37)
        calls.clear()
        mask, levels = model.pixel_decoder(features)
    tokens = sum(level.shape[-2] * level.shape[-1] for level in levels)
    assert calls and max(calls) == 37 and sum(calls) % tokens == 0  # blocks, a partial last
    torch.testing.assert_close(mask, whole_mask, rtol=1e-6, atol=1e-6)
    for found, expected in zip(levels, whole_levels, strict=True):
        torch.testing.assert_close(found, expected, rtol=1e-6, atol=1e-6)
