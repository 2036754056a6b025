"""Least-squares refinement of a lifted field (Splat Feature Solver, Xiong et al. 2025).

Occam's LGS gives each Gaussian the weighted average of the 2D features it contributes to;
rendered again, those averages blend a second time. The Splat Feature Solver instead asks for
the features whose *render* matches every view,

    min_F  sum_views sum_pixels || sum_g a_gp F_g - T_p ||^2,   a_gp = w_gp / sum_g' w_g'p,

with T_p the (unit) embedding of pixel p's segment, w the alpha-blending weights of the
lifted Gaussians, normalised per pixel as :meth:`ovseg.fields.lift.LiftedField.render`
normalises them (pixels covered under ``MIN_COVER`` and void pixels have no target).

Each iteration is one forward pass and its transpose over every view: per pixel the residual
r_p = T_p - sum_g a_gp F_g, per Gaussian the step d_g = sum_p a_gp r_p / sum_p a_gp, and
F_g += omega d_g. Because the a_gp of a pixel are non-negative and sum to 1, A^T A <= D =
diag(sum_p a_gp) (Jensen: ||sum_g a_gp x_g||^2 <= sum_g a_gp ||x_g||^2), so the objective
falls by at least omega (2 - omega) d^T D d: it never rises for 0 < omega < 2 (a Jacobi step
preconditioned by the column sums; omega = 1 is the majorise-minimise step). From F = 0 the
first step with omega = 1 is the weighted average itself; the refinement starts from the
lifted mixtures instead.

It runs in a compact basis: the top singular vectors of the scene's segment-embedding table
(``rank`` of them), where every target lives up to what the rank drops. The stored field is
the mixture (full dimension, unchanged) plus each Gaussian's correction in that basis.

Threads: pixels scatter into ``blocks`` per-Gaussian buffers (tiles interleaved by index, as
in :mod:`ovseg.fields.fast_raster`) summed in block order; ``blocks`` is fixed, not the
thread count, so a refinement gives the same bits on any number of threads.
"""

from __future__ import annotations

import time
from pathlib import Path

import numba
import numpy as np
import torch

from ovseg.fields.camera import Camera
from ovseg.fields.fast_raster import (
    TILE,
    TILE_PARAMS,
    check_segments,
    load_tile,
    project_fast,
    splat_alpha,
    tile_box,
    tile_gaussians,
)
from ovseg.fields.gaussians import covariance_3d
from ovseg.fields.rasterizer import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN
from ovseg.fields.splat_ply import Splat
from ovseg.fileio import atomic_write

REFINE_BLOCKS = 4  # per-Gaussian scatter buffers: results do not depend on the thread count
MIN_COVER = 0.05  # pixels whose lifted Gaussians' weight is under this have no target
# the step times this: any factor in (0, 2) still never raises the objective (module doc);
# 1.5 lowered it most of 1, 1.5 and 1.9 over 4 iterations on the 3D world's scene 0
RELAXATION = 1.5


def segment_basis(embeddings: torch.Tensor, rank: int) -> torch.Tensor:
    """(k, D) orthonormal rows spanning the most of ``embeddings`` (S, D): its top right
    singular vectors, k = min(rank, S, D), signs fixed (largest entry positive)."""
    table = embeddings.double()
    _, _, vh = torch.linalg.svd(table, full_matrices=False)
    basis = vh[: min(rank, *table.shape)]
    sign = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
    return (basis * sign).float()


def mixture_coordinates(
    segments: torch.Tensor, weights: torch.Tensor, table: torch.Tensor, *, chunk: int = 1 << 16
) -> torch.Tensor:
    """(N, k) each Gaussian's mixture sum_m w_m e_{s_m} in the basis: ``segments`` (N, M)
    (-1 empty), ``weights`` (N, M), ``table`` (S, k) the segment embeddings' coordinates."""
    out = torch.zeros(len(segments), table.shape[1])
    for start in range(0, len(segments), chunk):
        s = segments[start : start + chunk].long()
        w = weights[start : start + chunk].float() * (s >= 0)
        out[start : start + chunk] = torch.einsum("nm,nmk->nk", w, table[s.clamp_min(0)])
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _normal_pass(  # noqa: PLR0913 (one flat signature keeps the compiled kernel simple)
    ranges,
    pairs,
    params,
    tiles_x,
    tile,
    width,
    height,
    blocks,
    segments,
    targets,
    features,
    lifted,
    min_cover,
    buffers,
    contributors,
    contributor_weights,
    pixel,
    out_step,
    out_column,
    out_objective,
):
    tile_count = ranges.shape[0]
    channels = features.shape[1]
    alpha_max, alpha_min = np.float32(ALPHA_MAX), np.float32(ALPHA_MIN)
    t_min, half, one = np.float32(TRANSMITTANCE_MIN), np.float32(0.5), np.float32(1.0)
    for block in numba.prange(blocks):
        local, who, how, value = (
            buffers[block],
            contributors[block],
            contributor_weights[block],
            pixel[block],
        )
        for t in range(block, tile_count, blocks):
            if ranges[t, 0] == ranges[t, 1]:
                continue
            start, length = load_tile(ranges, pairs, params, t, local)
            y0, y1, x0, x1 = tile_box(t, tiles_x, tile, width, height)
            for py in range(y0, y1):
                v = np.float32(py) + half
                for px in range(x0, x1):
                    segment = segments[py, px]
                    if segment < 0:
                        continue
                    u = np.float32(px) + half
                    transmittance = one
                    cover = np.float32(0.0)
                    count = 0
                    for c in range(channels):
                        value[c] = 0.0
                    for j in range(length):  # the forward pass of fast_raster._composite
                        alpha = splat_alpha(u, v, local[j], alpha_min, alpha_max)
                        if alpha < 0:
                            continue
                        after = transmittance * (one - alpha)
                        if after < t_min:
                            break
                        g = pairs[start + j]
                        if lifted[g]:
                            weight = alpha * transmittance
                            who[count] = g
                            how[count] = weight
                            count += 1
                            cover += weight
                            for c in range(channels):
                                value[c] += weight * features[g, c]
                        transmittance = after
                    if cover < min_cover:
                        continue
                    inverse = one / cover
                    error = 0.0
                    for c in range(channels):  # value becomes the residual
                        residual = targets[segment, c] - value[c] * inverse
                        value[c] = residual
                        error += residual * residual
                    out_objective[block] += error
                    for m in range(count):  # the transpose: residual x weight per Gaussian
                        g = who[m]
                        share = how[m] * inverse
                        out_column[block, g] += share
                        for c in range(channels):
                            out_step[block, g, c] += share * value[c]


class NormalPass:
    """Sums of one pass over views at fixed features: ``step`` (N, k) sum_p a_gp r_p (minus
    the objective's gradient in F / 2), ``column`` (N,) sum_p a_gp, ``objective`` sum_p
    ||r_p||^2 (float64). Views are added one by one; :meth:`result` sums the blocks."""

    def __init__(self, count: int, channels: int, blocks: int = REFINE_BLOCKS) -> None:
        self.blocks = blocks
        self._step = np.zeros((blocks, count, channels), np.float32)
        self._column = np.zeros((blocks, count), np.float32)
        self._objective = np.zeros(blocks, np.float64)

    def add_view(
        self,
        projection,
        opacities: torch.Tensor,
        segments: np.ndarray,
        targets: np.ndarray,
        features: np.ndarray,
        lifted: np.ndarray,
        width: int,
        height: int,
    ) -> None:
        """One view: ``segments`` (H, W) int indices into ``targets`` (S_view, k) float32,
        -1 void; ``features`` (N, k) float32 the Gaussians' coordinates; ``lifted`` (N,)."""
        segments = check_segments(segments, width, height)
        tiles = tile_gaussians(projection, opacities, width, height)
        channels = features.shape[1]
        _normal_pass(
            tiles.ranges,
            tiles.pairs,
            tiles.params,
            tiles.tiles_x,
            TILE,
            width,
            height,
            self.blocks,
            segments,
            np.ascontiguousarray(targets, np.float32).reshape(-1, channels),
            features,
            lifted,
            np.float32(MIN_COVER),
            np.empty((self.blocks, tiles.longest, TILE_PARAMS), np.float32),
            np.empty((self.blocks, tiles.longest), np.int64),
            np.empty((self.blocks, tiles.longest), np.float32),
            np.empty((self.blocks, channels), np.float32),
            self._step,
            self._column,
            self._objective,
        )

    def result(self) -> tuple[np.ndarray, np.ndarray, float]:
        step, column = self._step[0].copy(), self._column[0].copy()
        for block in range(1, self.blocks):
            step += self._step[block]
            column += self._column[block]
        return step, column, float(self._objective.sum())


def normal_pass(
    splat: Splat,
    cameras: list[Camera],
    segment_maps: list[np.ndarray],
    targets: torch.Tensor,
    features: torch.Tensor,
    lifted: torch.Tensor,
    *,
    blocks: int = REFINE_BLOCKS,
    covariances: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One pass over ``cameras`` at ``features`` (N, k): :class:`NormalPass`'s (step,
    column, objective). ``targets`` (S, k): global segment s of view v is its map's index +
    the segments of the views before v (as :func:`ovseg.fields.lift.lift_segments`)."""
    cloud = splat.cloud
    if covariances is None:
        covariances = covariance_3d(cloud.scales.detach(), cloud.quaternions.detach())
    features = np.ascontiguousarray(features.numpy(), np.float32)
    lifted = np.ascontiguousarray(lifted.numpy(), np.bool_)
    table = np.ascontiguousarray(targets.numpy(), np.float32)
    accumulated = NormalPass(len(features), features.shape[1], blocks)
    offset = 0
    for camera, segment_map in zip(cameras, segment_maps, strict=True):
        count = int(segment_map.max()) + 1 if (segment_map >= 0).any() else 0
        projection = project_fast(cloud.means.detach(), covariances, camera)
        accumulated.add_view(
            projection,
            cloud.opacities.detach(),
            segment_map,
            table[offset : offset + max(count, 1)],
            features,
            lifted,
            camera.width,
            camera.height,
        )
        offset += count
    return accumulated.result()


def refine_features(
    splat: Splat,
    cameras: list[Camera],
    segment_maps: list[np.ndarray],
    targets: torch.Tensor,
    start: torch.Tensor,
    lifted: torch.Tensor,
    iterations: int,
    *,
    blocks: int = REFINE_BLOCKS,
    state_path: Path | None = None,
    checkpoint_seconds: float = 60.0,
    progress: bool = True,
    stats: dict | None = None,
) -> torch.Tensor:
    """``iterations`` majorise-minimise steps (module doc) from ``start`` (N, k) for the
    Gaussians in ``lifted`` (N,) bool; returns the features (N, k) float32 (the others stay
    as they start). Progress is saved to ``state_path`` after an iteration once
    ``checkpoint_seconds`` have passed, and resumed from it. ``stats`` gets
    ``refine_objectives``, the objective at the start of each iteration."""
    from tqdm import tqdm

    cloud = splat.cloud
    covariances = covariance_3d(cloud.scales.detach(), cloud.quaternions.detach())
    features, objectives = start.float().clone(), []
    if state_path is not None and state_path.is_file():
        with np.load(state_path) as saved:
            features = torch.from_numpy(saved["features"].copy())
            objectives = [float(o) for o in saved["objectives"]]
    last_save = time.perf_counter()
    for done in tqdm(
        range(len(objectives), iterations),
        desc="refining",
        disable=not progress,
        initial=len(objectives),
        total=iterations,
    ):
        step, column, objective = normal_pass(
            splat,
            cameras,
            segment_maps,
            targets,
            features,
            lifted,
            blocks=blocks,
            covariances=covariances,
        )
        objectives.append(objective)
        moved = torch.from_numpy(column > 0) & lifted
        step = torch.from_numpy(step)[moved] / torch.from_numpy(column)[moved, None]
        features[moved] += RELAXATION * step
        if state_path is not None and done + 1 < iterations:
            if time.perf_counter() - last_save > checkpoint_seconds:
                _save_state(state_path, features, objectives)
                last_save = time.perf_counter()
    if stats is not None:
        stats["refine_objectives"] = objectives
    return features


def _save_state(path: Path, features: torch.Tensor, objectives: list[float]) -> None:
    def write(tmp):
        with open(tmp, "wb") as file:
            np.savez(file, features=features.numpy(), objectives=np.array(objectives))

    atomic_write(path, write)


def refine_mixture(
    tensors: dict[str, torch.Tensor],
    splat: Splat,
    cameras: list[Camera],
    segment_maps: list[np.ndarray],
    iterations: int,
    rank: int,
    *,
    state_path: Path | None = None,
    checkpoint_seconds: float = 60.0,
    progress: bool = True,
    stats: dict | None = None,
) -> dict[str, torch.Tensor]:
    """The stored field of :func:`ovseg.fields.lift.finish_mixture` refined: the same
    tensors with ``refine_basis`` (k, D) float32 (:func:`segment_basis` of the segment
    embeddings), ``refine_offsets`` (N, k) float16 (each Gaussian's correction: its feature
    is its mixture + offsets @ basis; 0 for Gaussians not lifted) and ``norms`` of the
    corrected features. ``segment_maps`` as for :func:`ovseg.fields.lift.lift_segments`."""
    embeddings = tensors["segment_embeddings"].float()
    basis = segment_basis(embeddings, rank)
    table = embeddings @ basis.T  # (S, k): the targets, up to what the rank drops
    lifted = tensors["norms"] > 0
    start = mixture_coordinates(tensors["mixture_segments"], tensors["mixture_weights"], table)
    features = refine_features(
        splat,
        cameras,
        segment_maps,
        table,
        start,
        lifted,
        iterations,
        state_path=state_path,
        checkpoint_seconds=checkpoint_seconds,
        progress=progress,
        stats=stats,
    )
    offsets = torch.where(lifted[:, None], features - start, torch.zeros(())).half()
    corrected = offsets.float()
    # ||m + B^T d||^2 = ||m||^2 + 2 d . (B m) + ||d||^2, B orthonormal rows, B m = start
    squared = tensors["norms"].float() ** 2 + 2 * (corrected * start).sum(1)
    squared += (corrected**2).sum(1)
    norms = torch.where(lifted, squared.clamp_min(1e-12).sqrt(), torch.zeros(()))
    return {
        **tensors,
        "refine_basis": basis.contiguous(),
        "refine_offsets": offsets.contiguous(),
        "norms": norms.contiguous(),
    }
