"""The compiled output-size resize of mask logits against the official two bilinear steps."""

import pytest
import torch
import torch.nn.functional as F

from ovseg.modeling.mask_resize import (
    composite_taps,
    resize_bilinear,
    resize_masks,
    semantic_scores,
)


def two_resizes(low, padded_hw, resized_hw, out_hw):
    """Mask2Former's upsampling to the padded input, the crop, detectron2's resize."""
    up = F.interpolate(low[None], size=padded_hw, mode="bilinear", align_corners=False)[0]
    cropped = up[:, : resized_hw[0], : resized_hw[1]]
    return F.interpolate(cropped[None], size=out_hw, mode="bilinear", align_corners=False)[0]


SIZES = [
    # (low h, w), padded, resized, output
    ((160, 216), (640, 864), (640, 853), (480, 640)),  # the speed bench's photo
    ((16, 24), (64, 96), (60, 90), (120, 200)),  # up again after the crop
    ((16, 24), (64, 96), (64, 96), (64, 96)),  # no crop, output at the input size
    ((9, 13), (36, 52), (33, 50), (7, 11)),  # odd sizes, strong downsampling
    ((1, 5), (4, 20), (3, 17), (2, 40)),  # a single row
]


@pytest.mark.parametrize(("low_hw", "padded", "resized", "out"), SIZES)
def test_compiled_pass_equals_two_resizes(low_hw, padded, resized, out):
    low = torch.randn(7, *low_hw, generator=torch.Generator().manual_seed(0)) * 4
    expected = two_resizes(low, padded, resized, out)
    found = resize_masks(low, padded, resized, out)
    assert found.shape == expected.shape == (7, *out)
    scale = expected.abs().max()
    assert (found - expected).abs().max() <= 1e-6 * scale


def test_fallback_is_the_two_resizes_bit_for_bit():
    """Gradients (and float64, other devices, tracing) keep F.interpolate."""
    low = torch.randn(20, 16, 24, generator=torch.Generator().manual_seed(1), requires_grad=True)
    expected = two_resizes(low, (64, 96), (60, 90), (30, 45))
    found = resize_masks(low, (64, 96), (60, 90), (30, 45), chunk=20)
    torch.testing.assert_close(found, expected, rtol=0, atol=0)
    # a few queries at a time: torch's kernel rounds differently for other channel counts
    chunked = resize_masks(low, (64, 96), (60, 90), (30, 45), chunk=3)
    torch.testing.assert_close(chunked, expected, rtol=0, atol=1e-6)
    found.sum().backward()
    assert low.grad is not None and low.grad.abs().sum() > 0
    double = low.detach().double()
    torch.testing.assert_close(
        resize_masks(double, (64, 96), (60, 90), (30, 45)),
        two_resizes(double, (64, 96), (60, 90), (30, 45)),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize(
    ("low_hw", "size"), [((160, 216), (20, 27)), ((16, 24), (40, 52)), ((9, 13), (9, 13))]
)
def test_resize_bilinear_is_f_interpolate(low_hw, size):
    """Mask pooling's shrink to the CLIP feature size (and growth: both directions)."""
    low = torch.randn(2, 11, *low_hw, generator=torch.Generator().manual_seed(2)) * 4
    expected = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    found = resize_bilinear(low, size)
    assert found.shape == expected.shape == (2, 11, *size)
    assert (found - expected).abs().max() <= 1e-6 * expected.abs().max()
    low.requires_grad_(True)  # gradients keep F.interpolate, bit for bit
    kept = resize_bilinear(low, size)
    torch.testing.assert_close(kept, expected, rtol=0, atol=0)
    kept.sum().backward()
    assert low.grad is not None


def test_taps_cover_every_weight():
    first, weights = composite_taps(160, 640, 637, 480)
    assert weights.shape[1] <= 4  # two two-tap steps
    assert (first >= 0).all() and (first + weights.shape[1] <= 160).all()
    torch.testing.assert_close(
        torch.from_numpy(weights.sum(1)), torch.ones(480), rtol=0, atol=1e-6
    )  # bilinear weights sum to one


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="crop within the padded size"):
        composite_taps(16, 64, 65, 10)
    with pytest.raises(ValueError, match="at least 1"):
        composite_taps(16, 64, 60, 0)


def test_threads_are_restored():
    before = torch.get_num_threads()
    resize_masks(torch.randn(3, 8, 8), (32, 32), (30, 31), (20, 25))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("block_values", [1 << 21, 7 * 45 * 3])  # one band; bands of 3 rows
@pytest.mark.parametrize(("low_hw", "padded", "resized", "out"), SIZES[:4])
def test_semantic_scores_in_bands_equal_the_full_size_sums(
    low_hw, padded, resized, out, block_values
):
    from ovseg.modeling.postprocess import semantic_inference

    generator = torch.Generator().manual_seed(2)
    low = torch.randn(7, *low_hw, generator=generator) * 4
    class_logits = torch.randn(7, 5, generator=generator) * 3
    expected = semantic_inference(class_logits, two_resizes(low, padded, resized, out))
    found = semantic_scores(class_logits, low, padded, resized, out, block_values=block_values)
    assert found.shape == expected.shape == (4, *out)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-5)
    assert semantic_scores(class_logits, low.double(), padded, resized, out) is None
