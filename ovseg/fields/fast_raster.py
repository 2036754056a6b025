"""The Gaussian rasterizer's forward pass compiled for the CPU (numba), for scenes at the
scale of real captures (millions of Gaussians, views of a megapixel), and the per-Gaussian
blending weights that training-free feature lifting needs.

Same rule as :mod:`ovseg.fields.rasterizer` (projection, footprint per pixel, depth order with
ties by index, alpha clamped at 0.99 and skipped under 1/255, the 3DGS stop at transmittance
1e-4), so the two agree to float32 rounding on any scene both can run (tested). The
difference is the schedule: each 16 x 16 tile copies its depth-sorted Gaussians into a
contiguous buffer, and each pixel walks that buffer once and stops as soon as it saturates,
where the vectorised PyTorch pass evaluates every (tile, Gaussian, pixel) triple and keeps the
autograd graph. No gradients here: this path is for rendering queries and for lifting.
Projection and the tiles' lists (a counting sort by tile, filled in depth order) are compiled
too.

Lifting (Occam's LGS, Cheng et al. 2024: a Gaussian's feature is the average of the pixel
features it contributes to, weighted by its alpha-blending weights w = alpha T of the
ordinary forward pass) needs, per view, sum_p w_gp for each Gaussian g and each segment of the
view's segment map: :func:`render_fast` returns those sums when given ``segments``, and
:class:`LiftAccumulator` folds them view after view into each Gaussian's heaviest segments.

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

from ovseg.fields.camera import Camera
from ovseg.fields.rasterizer import (
    ALPHA_MAX,
    ALPHA_MIN,
    DILATION,
    TRANSMITTANCE_MIN,
    Projection,
)

TILE = 16  # pixels (3DGS's): a pixel stops walking its list once it saturates
SEGMENT_SLOTS = 4  # segments a Gaussian can meet in one view before weight is dropped
TILE_PARAMS = 8  # per Gaussian in a tile's buffer: u, v, conic a, b, c, opacity, radius, depth


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


# ---------------------------------------------------------------------------------------
# projection


@numba.njit(parallel=True, cache=True, nogil=True)
def _project(
    means,
    covariances,
    rotation,
    translation,
    fx,
    fy,
    cx,
    cy,
    width,
    height,
    limits,
    near,
    out_means2d,
    out_conics,
    out_radii,
    out_depths,
    out_visible,
):
    n = means.shape[0]
    f32 = np.float32
    dilation, half, three = f32(DILATION), f32(0.5), f32(3.0)
    for i in numba.prange(n):
        x, y, z = means[i, 0], means[i, 1], means[i, 2]
        tx = rotation[0, 0] * x + rotation[0, 1] * y + rotation[0, 2] * z + translation[0]
        ty = rotation[1, 0] * x + rotation[1, 1] * y + rotation[1, 2] * z + translation[1]
        tz = rotation[2, 0] * x + rotation[2, 1] * y + rotation[2, 2] * z + translation[2]
        out_depths[i] = tz
        out_visible[i] = False
        out_radii[i] = 0
        if not tz > near:
            continue
        xz = min(max(tx / tz, -limits[1]), limits[0])
        yz = min(max(ty / tz, -limits[3]), limits[2])
        j00, j02 = fx / tz, -fx * xz / tz
        j11, j12 = fy / tz, -fy * yz / tz
        # T = J R (2 x 3), cov2d = T Sigma T^T
        t0 = (
            j00 * rotation[0, 0] + j02 * rotation[2, 0],
            j00 * rotation[0, 1] + j02 * rotation[2, 1],
            j00 * rotation[0, 2] + j02 * rotation[2, 2],
        )
        t1 = (
            j11 * rotation[1, 0] + j12 * rotation[2, 0],
            j11 * rotation[1, 1] + j12 * rotation[2, 1],
            j11 * rotation[1, 2] + j12 * rotation[2, 2],
        )
        s = covariances[i]
        st0 = (
            s[0, 0] * t0[0] + s[0, 1] * t0[1] + s[0, 2] * t0[2],
            s[1, 0] * t0[0] + s[1, 1] * t0[1] + s[1, 2] * t0[2],
            s[2, 0] * t0[0] + s[2, 1] * t0[1] + s[2, 2] * t0[2],
        )
        st1 = (
            s[0, 0] * t1[0] + s[0, 1] * t1[1] + s[0, 2] * t1[2],
            s[1, 0] * t1[0] + s[1, 1] * t1[1] + s[1, 2] * t1[2],
            s[2, 0] * t1[0] + s[2, 1] * t1[1] + s[2, 2] * t1[2],
        )
        a = t0[0] * st0[0] + t0[1] * st0[1] + t0[2] * st0[2] + dilation
        b = t0[0] * st1[0] + t0[1] * st1[1] + t0[2] * st1[2]
        c = t1[0] * st1[0] + t1[1] * st1[1] + t1[2] * st1[2] + dilation
        det = a * c - b * b
        if not det > 0:
            continue
        out_conics[i, 0], out_conics[i, 1], out_conics[i, 2] = c / det, -b / det, a / det
        mid = half * (a + c)
        lambda_max = mid + math.sqrt(max(mid * mid - det, f32(0.1)))
        radius = math.ceil(three * math.sqrt(max(lambda_max, f32(0.0))))
        u = fx * tx / tz + cx
        v = fy * ty / tz + cy
        out_means2d[i, 0], out_means2d[i, 1] = u, v
        out_radii[i] = radius
        out_visible[i] = (
            radius > 0
            and u + radius > 0
            and u - radius < width
            and v + radius > 0
            and v - radius < height
        )


def project_fast(
    means: torch.Tensor, covariances: torch.Tensor, camera: Camera, *, near: float = 0.01
) -> Projection:
    """:func:`ovseg.fields.rasterizer.project_gaussians` compiled, without gradients (equal
    to it to float32 rounding). means (N, 3), covariances (N, 3, 3) -> :class:`Projection`
    (CPU tensors; means2d, conics, radii of invisible Gaussians are 0)."""
    n = means.shape[0]
    f32 = np.float32
    tan_x, tan_y = 0.5 * camera.width / camera.fx, 0.5 * camera.height / camera.fy
    limits = np.array(
        [
            (camera.width - camera.cx) / camera.fx + 0.3 * tan_x,
            camera.cx / camera.fx + 0.3 * tan_x,
            (camera.height - camera.cy) / camera.fy + 0.3 * tan_y,
            camera.cy / camera.fy + 0.3 * tan_y,
        ],
        f32,
    )
    means2d, conics = np.zeros((n, 2), f32), np.zeros((n, 3), f32)
    radii, depths, visible = np.zeros(n, np.int64), np.zeros(n, f32), np.zeros(n, np.bool_)
    _project(
        _array(means, f32),
        _array(covariances, f32),
        _array(camera.rotation, f32),
        _array(camera.translation, f32),
        f32(camera.fx),
        f32(camera.fy),
        f32(camera.cx),
        f32(camera.cy),
        camera.width,
        camera.height,
        limits,
        f32(near),
        means2d,
        conics,
        radii,
        depths,
        visible,
    )
    return Projection(*(torch.from_numpy(a) for a in (means2d, conics, radii, depths, visible)))


# ---------------------------------------------------------------------------------------
# tiles


@numba.njit(cache=True, nogil=True)
def _tile_lists(order, means2d, radii, width, height, tile, tiles_x, tiles_y):
    """Counting sort of (tile, Gaussian) pairs by tile, filled in ``order`` (the visible
    Gaussians by depth, ties by index): per tile [start, end) into the returned list."""
    count = order.shape[0]
    rects = np.empty((count, 4), np.int64)
    counts = np.zeros(tiles_x * tiles_y + 1, np.int64)
    half = np.float32(0.5)
    for k in range(count):
        g = order[k]
        r = np.float32(radii[g])
        # pixel columns j with j + 0.5 within [u - r, u + r], clipped to the image
        x0 = min(max(math.ceil(means2d[g, 0] - r - half), 0), width - 1)
        x1 = min(max(math.floor(means2d[g, 0] + r - half), 0), width - 1)
        y0 = min(max(math.ceil(means2d[g, 1] - r - half), 0), height - 1)
        y1 = min(max(math.floor(means2d[g, 1] + r - half), 0), height - 1)
        if x1 < x0 or y1 < y0:
            rects[k, 0] = -1
            continue
        rects[k, 0], rects[k, 1] = x0 // tile, x1 // tile
        rects[k, 2], rects[k, 3] = y0 // tile, y1 // tile
        for ty in range(rects[k, 2], rects[k, 3] + 1):
            for tx in range(rects[k, 0], rects[k, 1] + 1):
                counts[ty * tiles_x + tx + 1] += 1
    starts = np.cumsum(counts)
    fill = starts[:-1].copy()
    pairs = np.empty(starts[-1], np.int64)
    for k in range(count):
        if rects[k, 0] < 0:
            continue
        for ty in range(rects[k, 2], rects[k, 3] + 1):
            for tx in range(rects[k, 0], rects[k, 1] + 1):
                t = ty * tiles_x + tx
                pairs[fill[t]] = order[k]
                fill[t] += 1
    ranges = np.empty((tiles_x * tiles_y, 2), np.int64)
    ranges[:, 0], ranges[:, 1] = starts[:-1], starts[1:]
    return ranges, pairs


# ---------------------------------------------------------------------------------------
# compositing


@numba.njit(inline="always", cache=True, nogil=True)
def splat_alpha(u, v, params, alpha_min, alpha_max):
    """One Gaussian's opacity at the pixel centre (u, v): ``params`` is its row of a tile's
    buffer (u, v, conic a, b, c, opacity, radius, depth), clamped to ``alpha_max``; -1 where
    it does not count (beyond its radius, a positive exponent, below ``alpha_min``). The
    rule of the compositing kernels here and of :mod:`ovseg.fields.lift_refine`'s."""
    dx = u - params[0]
    dy = v - params[1]
    r = params[6]
    if abs(dx) > r or abs(dy) > r:
        return np.float32(-1.0)
    power = -np.float32(0.5) * (params[2] * dx * dx + params[4] * dy * dy) - (params[3] * dx * dy)
    if power > 0:
        return np.float32(-1.0)
    alpha = params[5] * np.exp(power)
    if alpha > alpha_max:
        alpha = alpha_max
    if alpha < alpha_min:
        return np.float32(-1.0)
    return alpha


@numba.njit(inline="always", cache=True, nogil=True)
def load_tile(ranges, pairs, params, t, local):
    """Copies tile ``t``'s Gaussians' rows of ``params`` into ``local`` (contiguous, in depth
    order) and returns (start, length): its slice of ``pairs``. Shared by the compositing
    kernels here and :mod:`ovseg.fields.lift_refine`'s."""
    start, end = ranges[t, 0], ranges[t, 1]
    length = end - start
    for j in range(length):
        for p in range(TILE_PARAMS):
            local[j, p] = params[pairs[start + j], p]
    return start, length


@numba.njit(inline="always", cache=True, nogil=True)
def tile_box(t, tiles_x, tile, width, height):
    """Tile ``t``'s pixel rows and columns: (y0, y1, x0, x1), ends exclusive, clipped."""
    ty = t // tiles_x
    tx = t - ty * tiles_x
    return ty * tile, min((ty + 1) * tile, height), tx * tile, min((tx + 1) * tile, width)


@numba.njit(parallel=True, cache=True, nogil=True)
def _composite(  # noqa: PLR0913 (one flat signature keeps the compiled kernel simple)
    ranges,
    pairs,
    params,
    features,
    tiles_x,
    tile,
    width,
    height,
    blocks,
    segments,
    buffers,
    out_features,
    out_alpha,
    out_depth,
    slot_segment,
    slot_weight,
    dropped,
):
    tile_count = ranges.shape[0]
    channels = features.shape[1]
    slots = slot_segment.shape[2]
    lifting = segments.shape[0] > 0
    alpha_max, alpha_min = np.float32(ALPHA_MAX), np.float32(ALPHA_MIN)
    t_min, half, one = np.float32(TRANSMITTANCE_MIN), np.float32(0.5), np.float32(1.0)
    for block in numba.prange(blocks):
        local = buffers[block]
        for t in range(block, tile_count, blocks):
            if ranges[t, 0] == ranges[t, 1]:
                continue
            start, length = load_tile(ranges, pairs, params, t, local)
            y0, y1, x0, x1 = tile_box(t, tiles_x, tile, width, height)
            for py in range(y0, y1):
                v = np.float32(py) + half
                for px in range(x0, x1):
                    u = np.float32(px) + half
                    transmittance = one
                    alpha_sum = np.float32(0.0)
                    depth_sum = np.float32(0.0)
                    segment = segments[py, px] if lifting else -1
                    for j in range(length):
                        alpha = splat_alpha(u, v, local[j], alpha_min, alpha_max)
                        if alpha < 0:
                            continue
                        after = transmittance * (one - alpha)
                        if after < t_min:
                            break
                        weight = alpha * transmittance
                        g = pairs[start + j]
                        for c in range(channels):
                            out_features[py, px, c] += weight * features[g, c]
                        alpha_sum += weight
                        depth_sum += weight * local[j, 7]
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


@dataclass
class Tiles:
    """One view's projected Gaussians laid out for the compositing kernels: ``ranges``
    (tiles, 2) [start, end) into ``pairs`` (the Gaussians of each tile in depth order),
    ``params`` (N, 8) per Gaussian (u, v, conic a, b, c, opacity, radius, depth),
    ``tiles_x`` tiles per row and ``longest`` the longest tile list."""

    ranges: np.ndarray
    pairs: np.ndarray
    params: np.ndarray
    tiles_x: int
    longest: int


def tile_gaussians(projection: Projection, opacities: torch.Tensor, width: int, height: int):
    """:class:`Tiles` of one view (visible Gaussians sorted by depth, ties by index)."""
    n = projection.means2d.shape[0]
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    visible = torch.nonzero(projection.visible).squeeze(1)
    order = visible[torch.argsort(projection.depths[visible], stable=True)].numpy()
    means2d = _array(projection.means2d, np.float32)
    radii = _array(projection.radii, np.int64)
    ranges, pairs = _tile_lists(order, means2d, radii, width, height, TILE, tiles_x, tiles_y)
    params = np.empty((n, TILE_PARAMS), np.float32)
    params[:, 0:2] = means2d
    params[:, 2:5] = _array(projection.conics, np.float32)
    params[:, 5] = _array(opacities, np.float32)
    params[:, 6] = radii
    params[:, 7] = _array(projection.depths, np.float32)
    longest = int((ranges[:, 1] - ranges[:, 0]).max()) if len(ranges) else 0
    return Tiles(ranges, pairs, params, tiles_x, max(longest, 1))


def _run(
    projection, opacities, features, width, height, segments, blocks, slot_segment, slot_weight
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Tiles, buffers and the compositing kernel; slots are accumulated into in place."""
    n = projection.means2d.shape[0]
    tiles = tile_gaussians(projection, opacities, width, height)
    ranges, pairs, params, tiles_x = tiles.ranges, tiles.pairs, tiles.params, tiles.tiles_x
    buffers = np.empty((blocks, tiles.longest, TILE_PARAMS), np.float32)
    channels = 0 if features is None else features.shape[1]
    feature_array = (
        np.zeros((n, 0), np.float32) if features is None else _array(features, np.float32)
    )
    out_features = np.zeros((height, width, channels), np.float32)
    out_alpha = np.zeros((height, width), np.float32)
    out_depth = np.zeros((height, width), np.float32)
    dropped = np.zeros(blocks, np.float64)
    _composite(
        ranges,
        pairs,
        params,
        feature_array,
        tiles_x,
        TILE,
        width,
        height,
        blocks,
        segments if segments is not None else np.zeros((0, 0), np.int32),
        buffers,
        out_features,
        out_alpha,
        out_depth,
        slot_segment,
        slot_weight,
        dropped,
    )
    return out_features, out_alpha, out_depth, float(dropped.sum())


def check_segments(segments, width: int, height: int) -> np.ndarray:
    """``segments`` as a contiguous int32 (H, W) array; ValueError when it is not (H, W)."""
    segments = np.ascontiguousarray(segments, dtype=np.int32)
    if segments.shape != (height, width):
        raise ValueError(f"segments must be ({height}, {width}), got {segments.shape}")
    return segments


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
        projection: from :func:`project_fast` or
            :func:`ovseg.fields.rasterizer.project_gaussians` (N Gaussians).
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
    blocks = blocks or numba.get_num_threads()
    rows = n if segments is not None else 0
    slot_segment = np.full((blocks, rows, SEGMENT_SLOTS), -1, np.int32)
    slot_weight = np.zeros((blocks, rows, SEGMENT_SLOTS), np.float32)
    if segments is not None:
        segments = check_segments(segments, width, height)
    out_features, out_alpha, out_depth, dropped = _run(
        projection,
        opacities,
        features,
        width,
        height,
        segments,
        blocks,
        slot_segment,
        slot_weight,
    )
    rendered = torch.from_numpy(out_features)
    alpha = torch.from_numpy(out_alpha)
    if background is not None and features is not None:
        rendered = rendered + (1.0 - alpha)[..., None] * background.to(rendered)
    out = {"features": rendered, "alpha": alpha, "depth": torch.from_numpy(out_depth)}
    if segments is not None:
        out["segment_weights"] = _gather_slots(slot_segment, slot_weight, dropped)
    return out


def _array(tensor: torch.Tensor, dtype) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


def _gather_slots(slot_segment: np.ndarray, slot_weight: np.ndarray, dropped: float):
    """Per-block slots -> one entry per (Gaussian, segment), summed in block order."""
    blocks = slot_segment.shape[0]
    gaussians, segments, weights = [], [], []
    for block in range(blocks):
        g, k = np.nonzero(slot_segment[block] >= 0)
        gaussians.append(g)
        segments.append(slot_segment[block, g, k].astype(np.int64))
        weights.append(slot_weight[block, g, k])
    g, s, w = np.concatenate(gaussians), np.concatenate(segments), np.concatenate(weights)
    if blocks > 1 and len(g):
        span = int(s.max()) + 1
        unique, inverse = np.unique(g.astype(np.int64) * span + s, return_inverse=True)
        summed = np.bincount(inverse, weights=w, minlength=len(unique))
        g, s, w = unique // span, unique % span, summed.astype(np.float32)
    return SegmentWeights(g.astype(np.int64), s.astype(np.int64), w, dropped)


# ---------------------------------------------------------------------------------------
# lifting


@numba.njit(parallel=True, cache=True, nogil=True)
def _merge_slots(slot_segment, slot_weight, offset, mixture_segments, mixture_weights, total):
    """Fold one view's slots into each Gaussian's heaviest segments and its total, summing a
    segment met in several blocks in block order; the slots are emptied for the next view."""
    blocks, n, slots = slot_segment.shape
    kept = mixture_segments.shape[1]
    for g in numba.prange(n):
        for b in range(blocks):
            for k in range(slots):
                s = slot_segment[b, g, k]
                if s < 0:
                    break
                earlier = False
                for b2 in range(b):
                    for k2 in range(slots):
                        if slot_segment[b2, g, k2] == s:
                            earlier = True
                if earlier:
                    continue
                w = slot_weight[b, g, k]
                for b2 in range(b + 1, blocks):
                    for k2 in range(slots):
                        if slot_segment[b2, g, k2] == s:
                            w += slot_weight[b2, g, k2]
                total[g] += w
                lightest = 0
                for m in range(1, kept):
                    if mixture_weights[g, m] < mixture_weights[g, lightest]:
                        lightest = m
                if w > mixture_weights[g, lightest]:
                    mixture_weights[g, lightest] = w
                    mixture_segments[g, lightest] = offset + s
        for b in range(blocks):
            for k in range(slots):
                slot_segment[b, g, k] = -1
                slot_weight[b, g, k] = 0.0


class LiftAccumulator:
    """Each Gaussian's ``kept`` heaviest (segment, summed blending weight) pairs over the
    views added so far, and its total weight on pixels with a feature (Occam's LGS's sums,
    cut to a mixture: see :mod:`ovseg.fields.lift`).

    Attributes (NumPy, in place): ``segments`` (N, kept) int64 global segment ids (-1 empty),
    ``weights`` (N, kept) float32, ``total`` (N,) float32, ``dropped`` float.
    """

    def __init__(self, count: int, kept: int, *, blocks: int | None = None) -> None:
        self.blocks = blocks or numba.get_num_threads()
        self.segments = np.full((count, kept), -1, np.int64)
        self.weights = np.zeros((count, kept), np.float32)
        self.total = np.zeros(count, np.float32)
        self.dropped = 0.0
        self._slot_segment = np.full((self.blocks, count, SEGMENT_SLOTS), -1, np.int32)
        self._slot_weight = np.zeros((self.blocks, count, SEGMENT_SLOTS), np.float32)

    def add_view(
        self,
        projection: Projection,
        opacities: torch.Tensor,
        segments: np.ndarray,
        offset: int,
        width: int,
        height: int,
    ) -> None:
        """Rasterize one view (segments (H, W), -1 void; its segment k is global segment
        ``offset`` + k) and fold its weights in."""
        segments = check_segments(segments, width, height)
        *_, dropped = _run(
            projection,
            opacities,
            None,
            width,
            height,
            segments,
            self.blocks,
            self._slot_segment,
            self._slot_weight,
        )
        _merge_slots(
            self._slot_segment, self._slot_weight, offset, self.segments, self.weights, self.total
        )
        self.dropped += dropped
