"""The least-squares refinement of a lifted field (ovseg.fields.lift_refine): its pass is the
objective's gradient (against autograd through the PyTorch rasterizer), it lowers the
objective measured by an independent render, it gives the same bits on 1 and 2 threads, and
an interrupted refinement resumes to the same features."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ovseg.fields import lift_refine
from ovseg.fields.camera import Camera, look_at
from ovseg.fields.fast_raster import render_fast
from ovseg.fields.gaussians import GaussianCloud, covariance_3d
from ovseg.fields.lift import LiftConfig, finish_mixture, lift_segments
from ovseg.fields.lift_refine import (
    MIN_COVER,
    NormalPass,
    refine_features,
    refine_mixture,
    segment_basis,
)
from ovseg.fields.rasterizer import project_gaussians, rasterize
from ovseg.fields.splat_ply import Splat


def _cloud(n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return GaussianCloud(
        (torch.rand(n, 3, generator=gen) - 0.5) * 2,
        torch.log(0.02 + 0.1 * torch.rand(n, 3, generator=gen)),
        torch.randn(n, 4, generator=gen),
        torch.randn(n, generator=gen) * 2,
        torch.randn(n, 1, 3, generator=gen),
    )


def _cameras(width=64, height=48):
    eyes = [(0.3, -3.0, 1.4), (-2.0, -2.2, 1.0), (2.4, -1.5, 1.8)]
    return [
        Camera(look_at(eye, (0, 0, 0)), 60.0, 60.0, width / 2, height / 2, width, height, f"c{i}")
        for i, eye in enumerate(eyes)
    ]


def _segment_maps(cameras, seed=0):
    """Per view three vertical bands (segments 0-2) and a void corner: views disagree."""
    rng = np.random.default_rng(seed)
    maps = []
    for camera in cameras:
        cuts = np.sort(rng.integers(8, camera.width - 8, 2))
        columns = np.arange(camera.width)
        band = (columns >= cuts[0]).astype(int) + (columns >= cuts[1])
        segment = np.broadcast_to(band, (camera.height, camera.width)).copy()
        segment[:8, :8] = -1
        maps.append(segment)
    return maps


def _embeddings(count, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=gen), dim=1)


def test_the_pass_is_the_objectives_gradient():
    cloud, camera = _cloud(), _cameras()[0]
    covariances = covariance_3d(cloud.scales, cloud.quaternions).detach()
    projection = project_gaussians(cloud.means.detach(), covariances, camera)
    opacities = cloud.opacities.detach()
    segments = _segment_maps([camera])[0]
    gen = torch.Generator().manual_seed(1)
    targets = torch.randn(3, 5, generator=gen)
    features = torch.randn(400, 5, generator=gen)
    lifted = torch.rand(400, generator=gen) > 0.2
    found = NormalPass(400, 5, blocks=3)
    found.add_view(
        projection,
        opacities,
        segments,
        targets.numpy(),
        features.numpy(),
        lifted.numpy(),
        camera.width,
        camera.height,
    )
    step, column, objective = found.result()
    # reference: autograd through the PyTorch rasterizer, lifted Gaussians' weights only
    features = features.clone().requires_grad_(True)
    mask = lifted.float()[:, None]
    out = rasterize(
        projection, opacities, torch.cat([features * mask, mask], 1), camera.width, camera.height
    )["features"]
    cover = out[..., 5].detach()
    valid = torch.from_numpy(segments >= 0) & (cover >= MIN_COVER)
    assert valid.float().mean() > 0.5 and (cover[valid] < 0.9).any()  # partly covered pixels
    rendered = out[..., :5] / cover.clamp_min(1e-12)[..., None]
    target = targets[torch.from_numpy(segments).clamp_min(0)]
    loss = ((target - rendered) ** 2).sum(-1)[valid].sum()
    loss.backward()
    assert objective == pytest.approx(float(loss.detach()), rel=1e-4)
    torch.testing.assert_close(torch.from_numpy(step), -features.grad / 2, atol=2e-4, rtol=1e-3)
    assert (column[~lifted.numpy()] == 0).all() and (column > 0).sum() > 100


def _independent_objective(splat, cameras, maps, embeddings, tensors):
    """sum over pixels ||e_segment - render / cover||^2 with the stored full-dimension
    features, rendered by the plain compiled forward pass (not the refinement's kernel)."""
    e = tensors["segment_embeddings"].float()
    s, w = tensors["mixture_segments"].long(), tensors["mixture_weights"].float()
    features = (w[..., None] * e[s.clamp_min(0)] * (s >= 0)[..., None]).sum(1)
    if "refine_offsets" in tensors:
        features += tensors["refine_offsets"].float() @ tensors["refine_basis"]
    lifted = (tensors["norms"] > 0).float()[:, None]
    cloud = splat.cloud
    covariances = covariance_3d(cloud.scales, cloud.quaternions).detach()
    total, offset = 0.0, 0
    for camera, segment in zip(cameras, maps, strict=True):
        projection = project_gaussians(cloud.means.detach(), covariances, camera)
        out = render_fast(
            projection,
            cloud.opacities.detach(),
            torch.cat([features * lifted, lifted], 1),
            camera.width,
            camera.height,
        )["features"]
        cover = out[..., -1]
        valid = torch.from_numpy(segment >= 0) & (cover >= MIN_COVER)
        target = e[offset + torch.from_numpy(segment).clamp_min(0)]
        residual = target - out[..., :-1] / cover.clamp_min(1e-12)[..., None]
        total += float((residual**2).sum(-1)[valid].sum())
        offset += int(segment.max()) + 1
    return total


def test_refinement_lowers_the_least_squares_objective():
    splat, cameras = Splat(_cloud(n=1500)), _cameras()
    maps = _segment_maps(cameras)
    embeddings = _embeddings(9)  # 3 views x 3 segments, unrelated across views
    cfg = LiftConfig(mixture=4)
    tensors = finish_mixture(
        lift_segments(splat, cameras, maps, cfg, progress=False), embeddings, cfg
    )
    stats = {}
    refined = refine_mixture(tensors, splat, cameras, maps, 4, 8, progress=False, stats=stats)
    before = _independent_objective(splat, cameras, maps, embeddings, tensors)
    after = _independent_objective(splat, cameras, maps, embeddings, refined)
    objectives = stats["refine_objectives"]
    assert objectives[0] == pytest.approx(before, rel=1e-3)  # rank 8 = D: the whole objective
    assert all(b <= a for a, b in zip(objectives, objectives[1:], strict=False))
    assert after < 0.9 * before, (before, after)
    # the queries read the refined features: cosines follow mixture + offsets @ basis
    e = refined["segment_embeddings"].float()
    s, w = refined["mixture_segments"].long(), refined["mixture_weights"].float()
    full = (w[..., None] * e[s.clamp_min(0)] * (s >= 0)[..., None]).sum(1)
    full += refined["refine_offsets"].float() @ refined["refine_basis"]
    lifted = refined["norms"] > 0
    torch.testing.assert_close(
        refined["norms"][lifted], full.norm(dim=1)[lifted], atol=1e-4, rtol=1e-4
    )


def test_the_basis_is_orthonormal_and_spans_the_table():
    table = _embeddings(20, dim=16)
    basis = segment_basis(table, 32)
    assert basis.shape == (16, 16)  # the rank is capped by the table
    torch.testing.assert_close(basis @ basis.T, torch.eye(16), atol=1e-5, rtol=0)
    low = segment_basis(table[:3], 8)
    assert low.shape == (3, 16)
    torch.testing.assert_close((table[:3] @ low.T) @ low, table[:3], atol=1e-5, rtol=0)


_THREADS = """
import hashlib, sys, numba, torch
sys.path.insert(0, sys.argv[1])
import tests.test_lift_refine as t
from ovseg.fields.lift_refine import refine_features
from ovseg.fields.splat_ply import Splat
assert numba.get_num_threads() == int(sys.argv[2])
cameras = t._cameras()
maps = t._segment_maps(cameras)
start = torch.randn(1500, 6, generator=torch.Generator().manual_seed(2))
out = refine_features(Splat(t._cloud(n=1500)), cameras, maps, t._embeddings(9, dim=6), start,
                      torch.ones(1500, dtype=torch.bool), 2, progress=False)
print(hashlib.sha256(out.numpy().tobytes()).hexdigest())
"""


def test_the_same_bits_on_one_and_two_threads():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = []
    for threads in ("1", "2"):
        env = {**os.environ, "NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-c", _THREADS, root, threads],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        digests.append(done.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1]


def test_an_interrupted_refinement_resumes_to_the_same_features(tmp_path, monkeypatch):
    splat, cameras = Splat(_cloud(n=800)), _cameras()
    maps, targets = _segment_maps(cameras), _embeddings(9, dim=6)
    start = torch.randn(800, 6, generator=torch.Generator().manual_seed(3))
    lifted = torch.ones(800, dtype=torch.bool)
    whole = refine_features(splat, cameras, maps, targets, start, lifted, 3, progress=False)
    real, calls = lift_refine.normal_pass, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(lift_refine, "normal_pass", failing)
    state = tmp_path / "refine_state.npz"
    with pytest.raises(KeyboardInterrupt):
        refine_features(
            splat,
            cameras,
            maps,
            targets,
            start,
            lifted,
            3,
            state_path=state,
            checkpoint_seconds=0,
            progress=False,
        )
    assert state.is_file()
    monkeypatch.setattr(lift_refine, "normal_pass", real)
    stats = {}
    resumed = refine_features(
        splat,
        cameras,
        maps,
        targets,
        start,
        lifted,
        3,
        state_path=state,
        progress=False,
        stats=stats,
    )
    assert len(stats["refine_objectives"]) == 3
    assert torch.equal(resumed, whole)
