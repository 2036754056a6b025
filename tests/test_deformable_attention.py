"""Multi-scale deformable attention against a slow, hand-written bilinear sampler (spec s.4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ovseg.modeling.deformable_attention import (
    MultiScaleDeformableAttention,
    multi_scale_deformable_sampling,
)

SHAPES = [(3, 5), (2, 3), (1, 1)]  # (H, W) per level, odd and non-square on purpose


def bilinear_reference(value_map, u_x, u_y):
    """value_map (C, H, W); normalised (u_x, u_y) -> (C,), align_corners=False, zero outside."""
    channels, height, width = value_map.shape
    px, py = u_x * width - 0.5, u_y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    out = torch.zeros(channels, dtype=value_map.dtype)
    for yy, wy in ((y0, 1.0 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1.0 - fx), (x0 + 1, fx)):
            if 0 <= yy < height and 0 <= xx < width:
                out += wy * wx * value_map[:, yy, xx]
    return out


def sampling_reference(value, shapes, locations, weights):
    """The slow loop: value (B, N_in, M, D) -> (B, Nq, M*D), channel = head * D + d."""
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    out = torch.zeros(batch, num_queries, heads * head_dim, dtype=value.dtype)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(batch):
        for q in range(num_queries):
            for m in range(heads):
                acc = torch.zeros(head_dim, dtype=value.dtype)
                for lvl, (h, w) in enumerate(shapes):
                    # tokens of a level are row-major (i, j) -> start + i * w + j
                    level_map = value[b, starts[lvl] : starts[lvl + 1], m].T.reshape(head_dim, h, w)
                    for p in range(points):
                        u_x, u_y = locations[b, q, m, lvl, p].tolist()
                        acc += weights[b, q, m, lvl, p] * bilinear_reference(level_map, u_x, u_y)
                out[b, q, m * head_dim : (m + 1) * head_dim] = acc
    return out


def special_locations(num_queries, heads, levels, points):
    """Points outside the map, on pixel centres, between centres, and half outside a border."""
    candidates = []
    for h, w in SHAPES:
        candidates += [
            (-0.4, 0.5),
            (1.7, 0.2),
            (0.5, -1.0),
            (0.3, 1.2),  # fully outside
            (0.5 / w, 0.5 / h),
            ((w - 0.5) / w, (h - 0.5) / h),  # exactly on pixel centres
            (0.37, 0.61),
            (0.91, 0.13),  # between centres
            (0.1 / w, 0.2 / h),
            (1.0 - 0.2 / w, 1.0 - 0.1 / h),  # straddling the border
            (1.0, 0.0),
            (0.0, 1.0),  # exact corners of the map
        ]
    generator = torch.Generator().manual_seed(0)
    total = 2 * num_queries * heads * levels * points
    index = torch.randint(len(candidates), (total,), generator=generator)
    locs = torch.tensor(candidates, dtype=torch.float64)[index]
    return locs.view(2, num_queries, heads, levels, points, 2)


def test_bilinear_reference_known_values():
    """Sanity of the reference itself on a 2x2 map with hand-computed answers."""
    value_map = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)
    assert bilinear_reference(value_map, 0.25, 0.25).item() == 1.0  # centre of pixel (0, 0)
    assert bilinear_reference(value_map, 0.5, 0.5).item() == 2.5  # middle of all four
    assert bilinear_reference(value_map, 0.0, 0.25).item() == 0.5  # half outside on the left
    assert bilinear_reference(value_map, 1.5, 0.5).item() == 0.0  # fully outside


def test_sampling_matches_slow_reference():
    torch.manual_seed(0)
    batch, heads, head_dim, queries, points = 2, 2, 3, 4, 3
    levels = len(SHAPES)
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, tokens, heads, head_dim, dtype=torch.float64)
    locations = special_locations(queries, heads, levels, points)
    weights = torch.rand(batch, queries, heads, levels, points, dtype=torch.float64)
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True)

    actual = multi_scale_deformable_sampling(value, SHAPES, locations, weights)
    expected = sampling_reference(value, SHAPES, locations, weights)
    assert actual.shape == (batch, queries, heads * head_dim)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_sampling_random_locations_and_unnormalised_weights():
    """Arbitrary locations in [-0.3, 1.3] and weights that do not sum to one."""
    torch.manual_seed(1)
    batch, heads, head_dim, queries, points = 2, 2, 2, 5, 2
    levels = len(SHAPES)
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, tokens, heads, head_dim, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, levels, points, 2, dtype=torch.float64)
    locations = locations * 1.6 - 0.3
    weights = torch.randn(batch, queries, heads, levels, points, dtype=torch.float64)

    actual = multi_scale_deformable_sampling(value, SHAPES, locations, weights)
    expected = sampling_reference(value, SHAPES, locations, weights)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_sampling_pixel_centre_reads_exact_token():
    """A single point on the centre of pixel (i, j) of level 1 with weight 1 returns that token."""
    heads, head_dim = 2, 3
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.arange(tokens * heads * head_dim, dtype=torch.float64)
    value = value.view(1, tokens, heads, head_dim)
    h1, w1 = SHAPES[1]
    i, j = 1, 2
    locations = torch.zeros(1, 1, heads, len(SHAPES), 1, 2, dtype=torch.float64)
    locations[..., 0] = (j + 0.5) / w1
    locations[..., 1] = (i + 0.5) / h1
    weights = torch.zeros(1, 1, heads, len(SHAPES), 1, dtype=torch.float64)
    weights[:, :, :, 1] = 1.0
    out = multi_scale_deformable_sampling(value, SHAPES, locations, weights)
    token = SHAPES[0][0] * SHAPES[0][1] + i * w1 + j
    torch.testing.assert_close(out[0, 0], value[0, token].reshape(-1))


def test_module_matches_reference_with_random_projections():
    """Offsets are in pixels of each level: location = ref + (dx / W_l, dy / H_l)."""
    torch.manual_seed(2)
    d_model, heads, points = 8, 2, 2
    levels = len(SHAPES)
    module = MultiScaleDeformableAttention(d_model, levels, heads, points).double()
    with torch.no_grad():
        for layer in (module.sampling_offsets, module.attention_weights):
            layer.weight.normal_(0, 0.3)
            layer.bias.normal_(0, 1.0)
    tokens = sum(h * w for h, w in SHAPES)
    queries = 3
    query = torch.randn(2, queries, d_model, dtype=torch.float64)
    value_input = torch.randn(2, tokens, d_model, dtype=torch.float64)
    reference_points = torch.rand(2, queries, levels, 2, dtype=torch.float64)

    actual = module(query, reference_points, value_input, SHAPES)

    value = value_input @ module.value_proj.weight.T + module.value_proj.bias
    value = value.view(2, tokens, heads, d_model // heads)
    offsets = query @ module.sampling_offsets.weight.T + module.sampling_offsets.bias
    logits = query @ module.attention_weights.weight.T + module.attention_weights.bias
    locations = torch.zeros(2, queries, heads, levels, points, 2, dtype=torch.float64)
    weights = torch.zeros(2, queries, heads, levels, points, dtype=torch.float64)
    for b in range(2):
        for q in range(queries):
            for m in range(heads):
                joint = logits[b, q, m * levels * points : (m + 1) * levels * points]
                joint = joint.exp() / joint.exp().sum()  # softmax over levels x points jointly
                for lvl, (h, w) in enumerate(SHAPES):
                    for p in range(points):
                        o = ((m * levels + lvl) * points + p) * 2
                        locations[b, q, m, lvl, p, 0] = (
                            reference_points[b, q, lvl, 0] + offsets[b, q, o] / w
                        )
                        locations[b, q, m, lvl, p, 1] = (
                            reference_points[b, q, lvl, 1] + offsets[b, q, o + 1] / h
                        )
                        weights[b, q, m, lvl, p] = joint[lvl * points + p]
    sampled = sampling_reference(value, SHAPES, locations, weights)
    expected = sampled @ module.output_proj.weight.T + module.output_proj.bias
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_module_default_init_shapes_finite_and_gradients():
    torch.manual_seed(3)
    module = MultiScaleDeformableAttention(d_model=16, num_levels=3, num_heads=2, num_points=2)
    tokens = sum(h * w for h, w in SHAPES)
    query = torch.randn(2, tokens, 16, requires_grad=True)
    value_input = torch.randn(2, tokens, 16)
    reference_points = torch.rand(2, tokens, 3, 2)
    out = module(query, reference_points, value_input, SHAPES)
    assert out.shape == (2, tokens, 16)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for name in ("value_proj", "output_proj", "sampling_offsets", "attention_weights"):
        grad = getattr(module, name).weight.grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, f"no gradient reaches {name}"
    # offset and attention weights start at zero, so the output does not depend on the query yet
    assert query.grad is not None and (query.grad == 0).all()


def test_module_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDeformableAttention(d_model=10, num_heads=3)


def test_sampling_offsets_init_follows_spec():
    """8 heads: unit directions scaled so the larger component is 1, times (p + 1)."""
    levels, points = 3, 4
    module = MultiScaleDeformableAttention(
        d_model=32, num_levels=levels, num_heads=8, num_points=points
    )
    directions = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
    expected = torch.zeros(8 * levels * points * 2)
    for head, (dx, dy) in enumerate(directions):
        for lvl in range(levels):
            for p in range(points):
                o = ((head * levels + lvl) * points + p) * 2
                expected[o], expected[o + 1] = dx * (p + 1), dy * (p + 1)
    torch.testing.assert_close(module.sampling_offsets.bias.detach(), expected, atol=1e-5, rtol=0)
    assert (module.sampling_offsets.weight == 0).all()
    assert (module.attention_weights.weight == 0).all()
    assert (module.attention_weights.bias == 0).all()
    assert (module.value_proj.bias == 0).all() and (module.output_proj.bias == 0).all()
    assert module.value_proj.weight.abs().sum() > 0  # xavier, not zero


def test_default_init_offsets_give_spec_locations():
    """With zero offset weights and uniform attention, one head/level/point reads the pixel at
    (ref + (p + 1) * direction) pixels: check head 0 (+x) and head 2 (+y) on a single token."""
    torch.manual_seed(4)
    module = MultiScaleDeformableAttention(d_model=8, num_levels=1, num_heads=8, num_points=1)
    with torch.no_grad():
        module.value_proj.weight.copy_(torch.eye(8))
        module.output_proj.weight.copy_(torch.eye(8))
    shapes = [(3, 5)]
    value_input = torch.randn(1, 15, 8)
    # reference at the centre of pixel (1, 1): head 0 samples (1, 2), head 2 samples (2, 1)
    reference_points = torch.tensor([[[[1.5 / 5, 1.5 / 3]]]])
    out = module(torch.randn(1, 1, 8), reference_points, value_input, shapes)
    grid = value_input[0].view(3, 5, 8)
    assert torch.allclose(out[0, 0, 0], grid[1, 2, 0], atol=1e-5)  # head 0, channel 0
    assert torch.allclose(out[0, 0, 2], grid[2, 1, 2], atol=1e-5)  # head 2, channel 2
    assert torch.allclose(out[0, 0, 4], grid[1, 0, 4], atol=1e-5)  # head 4 (-x)
    # head 1 (+1, +1) -> pixel (2, 2)
    assert torch.allclose(out[0, 0, 1], grid[2, 2, 1], atol=1e-5)


def test_sampling_matches_grid_sample_float32_large():
    """The float32 path on a bigger random case agrees with the float64 reference."""
    torch.manual_seed(5)
    shapes = [(4, 6), (7, 3)]
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(1, tokens, 2, 4, dtype=torch.float64)
    locations = torch.rand(1, 6, 2, 2, 3, 2, dtype=torch.float64) * 1.2 - 0.1
    weights = F.softmax(torch.randn(1, 6, 2, 6, dtype=torch.float64), -1).view(1, 6, 2, 2, 3)
    expected = sampling_reference(value, shapes, locations, weights)
    actual = multi_scale_deformable_sampling(
        value.float(), shapes, locations.float(), weights.float()
    )
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)


def grid_sample_sampling(value, shapes, locations, weights):
    """Deformable DETR's ms_deform_attn_core_pytorch: per-level grid_sample, then weights."""
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    grids = 2 * locations - 1
    sampled = []
    for level, (value_l, (h, w)) in enumerate(
        zip(value.split([h * w for h, w in shapes], dim=1), shapes, strict=True)
    ):
        value_map = value_l.flatten(2).transpose(1, 2).reshape(batch * heads, head_dim, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_map, grid, align_corners=False, padding_mode="zeros"))
    stacked = torch.stack(sampled, -2).flatten(-2)  # (B*heads, head_dim, Nq, levels*points)
    w = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (stacked * w).sum(-1).view(batch, heads * head_dim, queries)
    return out.transpose(1, 2)


def test_gradients_match_grid_sample_formulation():
    """Training backpropagates into values, sampling locations and attention weights exactly as
    through the grid_sample formulation (locations strictly inside cells: floor is flat)."""
    torch.manual_seed(7)
    shapes = [(5, 4), (3, 6), (2, 2)]
    tokens = sum(h * w for h, w in shapes)
    inputs = [
        torch.randn(2, tokens, 2, 3, dtype=torch.float64),
        torch.rand(2, 7, 2, 3, 2, 2, dtype=torch.float64) * 1.3 - 0.15,
        torch.rand(2, 7, 2, 3, 2, dtype=torch.float64),
    ]
    grads = []
    for fn in (multi_scale_deformable_sampling, grid_sample_sampling):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        out = fn(leaves[0], shapes, leaves[1], leaves[2])
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append((out.detach(), [leaf.grad for leaf in leaves]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for ours, theirs in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(ours, theirs)


def fused_case(batch=2, heads=4, points=3, seed=0):
    """Random value / reference / offsets / logits on SHAPES with offsets that reach outside
    every level (so zero padding is exercised)."""
    generator = torch.Generator().manual_seed(seed)
    levels = len(SHAPES)
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, tokens, heads, 8, generator=generator)
    reference = torch.rand(batch, 7, levels, 2, generator=generator)
    offsets = torch.randn(batch, 7, heads, levels, points, 2, generator=generator) * 3
    logits = torch.randn(batch, 7, heads, levels * points, generator=generator)
    return value, reference, offsets, logits


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_cpu_sampling_equals_the_pytorch_path(threads):
    from ovseg.modeling.deformable_cpu import fused_deformable_sampling

    value, reference, offsets, logits = fused_case()
    batch, queries, heads, levels, points, _ = offsets.shape
    normalizer = torch.tensor([[w, h] for h, w in SHAPES], dtype=torch.float32)
    locations = reference[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None]
    weights = F.softmax(logits, -1).view(batch, queries, heads, levels, points)
    expected = multi_scale_deformable_sampling(value, SHAPES, locations, weights)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        actual = fused_deformable_sampling(value, SHAPES, reference, offsets, logits)
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    slow = sampling_reference(value, SHAPES, locations, weights)
    torch.testing.assert_close(actual, slow, rtol=1e-5, atol=1e-5)


def test_attention_fuses_only_where_no_gradient_is_wanted(monkeypatch):
    import ovseg.modeling.deformable_attention as module

    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(32, len(SHAPES), 4, 3)
    with torch.no_grad():
        attention.sampling_offsets.weight.normal_(0, 0.5)
        attention.attention_weights.weight.normal_(0, 0.5)
    tokens = sum(h * w for h, w in SHAPES)
    query = torch.randn(2, tokens, 32)
    reference = torch.rand(2, tokens, len(SHAPES), 2)
    calls = []
    fused = module.fused_deformable_sampling
    monkeypatch.setattr(
        module, "fused_deformable_sampling", lambda *a: calls.append(1) or fused(*a)
    )
    with torch.no_grad():
        inference = attention(query, reference, query, SHAPES)
    assert calls == [1]
    training = attention(query, reference, query, SHAPES)  # gradients: the PyTorch path
    assert calls == [1] and training.requires_grad
    torch.testing.assert_close(inference, training.detach(), rtol=1e-5, atol=1e-5)


def test_the_fused_pass_leaves_torchs_thread_count_alone():
    """numba's OpenMP layer shares the runtime with torch: restoring numba's own default
    after the pass set torch to 2 threads in a --threads 1 run (results then differ in the
    last bits from a 1-thread run: torchrun's processes and a plain run disagreed)."""
    from ovseg.modeling.deformable_cpu import fused_deformable_sampling

    value, reference, offsets, logits = fused_case()
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fused_deformable_sampling(value, SHAPES, reference, offsets, logits)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
