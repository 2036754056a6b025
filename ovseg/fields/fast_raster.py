"""The Gaussian rasterizer's forward pass compiled for the CPU (numba), for scenes at the
scale of real captures (millions of Gaussians, views of a megapixel), and the per-Gaussian
blending weights that training-free feature lifting needs.

Same rule as :mod:`ovseg.fields.rasterizer` (projection, footprint per pixel, depth order with
ties by index, alpha clamped at 0.99 and skipped under 1/255, the 3DGS stop at transmittance
1e-4), so the two agree to float32 rounding on any scene both can run (tested). The
difference is the schedule: each pixel walks its tile's depth-sorted list once and stops as
soon as it saturates, where the vectorised PyTorch pass evaluates every (tile, Gaussian,
pixel) triple and keeps the autograd graph. No gradients here: this path is for rendering
queries and for lifting.

Lifting (Occam's LGS, Cheng et al. 2024: a Gaussian's feature is the average of the pixel
features it contributes to, weighted by its alpha-blending weights w = alpha T of the
ordinary forward pass) needs, per view, sum_p w_gp for each Gaussian g and each segment of the
view's segment map; :func:`render_fast` returns those sums when given ``segments``.

Threads: the tiles are split into ``blocks`` interleaved by index (block b takes tiles b,
b + B, ...); each block runs on one thread with its own per-Gaussian buffers, and the buffers
are summed in block order, so a result depends on the thread count only through float32
rounding of those sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch

from ovseg.fields.rasterizer import (
    ALPHA_MAX,
    ALPHA_MIN,
    TRANSMITTANCE_MIN,
    Projection,
    tile_pairs,
)

TILE = 16  # pixels (3DGS's): a pixel stops walking its list once it saturates
SEGMENT_SLOTS = 4  # segments a Gaussian can meet in one view before weight is dropped


@dataclass
class SegmentWeights:
    """Per-view lifting weights: ``gaussians`` (E,) int64, ``segments`` (E,) int64 (indices
    into the view's segments), ``weights`` (E,) float32 sums of alpha-blending weights, one
    entry per (Gaussian, segment) pair that met; ``dropped`` the total weight that found no
    free slot (a Gaussian touching more than ``SEGMENT_SLOTS`` segments in one view)."""

    gaussians: np.ndarray
    segments: np.ndarray
    weights: np.ndarray
    dropped: float


@numba.njit(parallel=True, cache=True, nogil=True)
def _composite(  # noqa: PLR0913 (one flat signature keeps the compiled kernel simple)
    ranges, pair_gaussians, means2d, conics, opacities, radii, depths, features,
    tiles_x, tile, width, height, blocks, segments,
    out_features, out_alpha, out_depth, slot_segment, slot_weight, dropped,
):  # fmt: skip
    tile_count = ranges.shape[0]
    channels = features.shape[1]
    slots = slot_segment.shape[2]
    lifting = segments.shape[0] > 0
    alpha_max = np.float32(ALPHA_MAX)
    alpha_min = np.float32(ALPHA_MIN)
    t_min = np.float32(TRANSMITTANCE_MIN)
    half = np.float32(0.5)
    one = np.float32(1.0)
    for block in numba.prange(blocks):
        for t in range(block, tile_count, blocks):
            start, end = ranges[t, 0], ranges[t, 1]
            if start == end:
                continue
            ty = t // tiles_x
            tx = t - ty * tiles_x
            for py in range(ty * tile, min((ty + 1) * tile, height)):
                v = np.float32(py) + half
                for px in range(tx * tile, min((tx + 1) * tile, width)):
                    u = np.float32(px) + half
                    transmittance = one
                    alpha_sum = np.float32(0.0)
                    depth_sum = np.float32(0.0)
                    segment = segments[py, px] if lifting else -1
                    for j in range(start, end):
                        g = pair_gaussians[j]
                        dx = u - means2d[g, 0]
                        dy = v - means2d[g, 1]
                        r = np.float32(radii[g])
                        if abs(dx) > r or abs(dy) > r:
                            continue
                        power = -half * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) - (
                            conics[g, 1] * dx * dy
                        )
                        if power > 0:
                            continue
                        alpha = opacities[g] * np.exp(power)
                        if alpha > alpha_max:
                            alpha = alpha_max
                        if alpha < alpha_min:
                            continue
                        after = transmittance * (one - alpha)
                        if after < t_min:
                            break
                        weight = alpha * transmittance
                        for c in range(channels):
                            out_features[py, px, c] += weight * features[g, c]
                        alpha_sum += weight
                        depth_sum += weight * depths[g]
                        if segment >= 0:
                            placed = False
                            for k in range(slots):
                                held = slot_segment[block, g, k]
                                if held == segment:
                                    slot_weight[block, g, k] += weight
                                    placed = True
                                    break
                                if held == -1:
                                    slot_segment[block, g, k] = segment
                                    slot_weight[block, g, k] = weight
                                    placed = True
                                    break
                            if not placed:
                                dropped[block] += weight
                        transmittance = after
                    out_alpha[py, px] = alpha_sum
                    out_depth[py, px] = depth_sum


def render_fast(
    projection: Projection,
    opacities: torch.Tensor,
    features: torch.Tensor | None,
    width: int,
    height: int,
    *,
    segments: np.ndarray | None = None,
    background: torch.Tensor | None = None,
    blocks: int | None = None,
) -> dict:
    """Alpha-composite projected Gaussians on the CPU (the rule of
    :func:`ovseg.fields.rasterizer.rasterize`, no gradients).

    Args:
        projection: from :func:`ovseg.fields.rasterizer.project_gaussians` (N Gaussians).
        opacities: (N,) in [0, 1].
        features: (N, C) what to composite, or None (alpha and depth only).
        width, height: the image size in pixels.
        segments: optional (H, W) int segment index per pixel, -1 where no feature (void):
            the per-Gaussian weight sums per segment are returned as ``segment_weights``.
        background: (C,) added where the Gaussians leave transmittance; default zeros.
        blocks: parallel blocks of tiles (default: numba's thread count).
    Returns: ``features`` (H, W, C) float32 tensor, ``alpha`` (H, W) in [0, 1] (1 - final
        transmittance), ``depth`` (H, W) alpha-weighted camera depth, and with ``segments``
        ``segment_weights`` (:class:`SegmentWeights`).
    Raises: ValueError when ``segments`` is not (H, W).
    """
    n = projection.means2d.shape[0]
    channels = 0 if features is None else features.shape[1]
    blocks = blocks or numba.get_num_threads()
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    visible = torch.nonzero(projection.visible).squeeze(1)
    pairs_gaussian, pairs_tile = tile_pairs(
        projection, visible, width, height, tiles_x, tiles_y, tile=TILE
    )
    counts = torch.bincount(pairs_tile, minlength=tiles_x * tiles_y)
    ends = torch.cumsum(counts, 0)
    ranges = torch.stack([ends - counts, ends], 1).numpy()
    if segments is not None:
        segments = np.ascontiguousarray(segments, dtype=np.int32)
        if segments.shape != (height, width):
            raise ValueError(
                f"render_fast: segments must be ({height}, {width}), got {segments.shape}"
            )
        slot_segment = np.full((blocks, n, SEGMENT_SLOTS), -1, np.int32)
        slot_weight = np.zeros((blocks, n, SEGMENT_SLOTS), np.float32)
    else:
        slot_segment = np.zeros((blocks, 0, SEGMENT_SLOTS), np.int32)
        slot_weight = np.zeros((blocks, 0, SEGMENT_SLOTS), np.float32)
    dropped = np.zeros(blocks, np.float64)
    out_features = np.zeros((height, width, channels), np.float32)
    out_alpha = np.zeros((height, width), np.float32)
    out_depth = np.zeros((height, width), np.float32)
    feature_array = (
        np.zeros((n, 0), np.float32) if features is None else _array(features, np.float32)
    )
    _composite(
        ranges, pairs_gaussian.to(torch.int32).numpy(), _array(projection.means2d, np.float32),
        _array(projection.conics, np.float32), _array(opacities, np.float32),
        _array(projection.radii, np.int32), _array(projection.depths, np.float32),
        feature_array, tiles_x, TILE, width, height, blocks,
        segments if segments is not None else np.zeros((0, 0), np.int32),
        out_features, out_alpha, out_depth, slot_segment, slot_weight, dropped,
    )  # fmt: skip
    rendered = torch.from_numpy(out_features)
    alpha = torch.from_numpy(out_alpha)
    if background is not None and channels:
        rendered = rendered + (1.0 - alpha)[..., None] * background.to(rendered)
    out = {"features": rendered, "alpha": alpha, "depth": torch.from_numpy(out_depth)}
    if segments is not None:
        out["segment_weights"] = _gather_slots(slot_segment, slot_weight, float(dropped.sum()))
    return out


def _array(tensor: torch.Tensor, dtype) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


def _gather_slots(slot_segment: np.ndarray, slot_weight: np.ndarray, dropped: float):
    """Per-block slots -> one entry per (Gaussian, segment), summed in block order."""
    blocks, _, slots = slot_segment.shape
    gaussians, segments, weights = [], [], []
    for block in range(blocks):
        g, k = np.nonzero(slot_segment[block] >= 0)
        gaussians.append(g)
        segments.append(slot_segment[block, g, k].astype(np.int64))
        weights.append(slot_weight[block, g, k])
    g, s, w = np.concatenate(gaussians), np.concatenate(segments), np.concatenate(weights)
    if blocks > 1 and len(g):
        key = g.astype(np.int64) * (int(s.max()) + 1) + s
        unique, inverse = np.unique(key, return_inverse=True)
        summed = np.bincount(inverse, weights=w, minlength=len(unique))
        span = int(s.max()) + 1
        g, s, w = unique // span, unique % span, summed.astype(np.float32)
    return SegmentWeights(g.astype(np.int64), s.astype(np.int64), w, dropped)
