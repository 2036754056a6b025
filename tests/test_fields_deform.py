"""Deformable Gaussians (ovseg.fields.deform) and the dynamic RGB fit."""

import math

import pytest
import torch

from ovseg.fields.camera import Camera, look_at
from ovseg.fields.deform import (
    DeformationField,
    SpacetimeCloud,
    StatusField,
    deform,
    sinusoidal_encoding,
    split_in_time,
)
from ovseg.fields.fit import DeformationFitConfig, FitConfig, View, fit_rgb
from ovseg.fields.gaussians import GaussianCloud
from ovseg.fields.rasterizer import render


def _cloud(count=120, seed=0):
    generator = torch.Generator().manual_seed(seed)
    points = (torch.rand(count, 3, generator=generator) - 0.5) * torch.tensor([1.0, 1.0, 0.1])
    colours = torch.rand(count, 3, generator=generator)
    return GaussianCloud.from_points(points, colours, opacity=0.6)


def _cameras(size=(40, 32)):
    width, height = size
    cameras = []
    for k in range(3):
        angle = 2 * math.pi * k / 3
        eye = (1.2 * math.cos(angle), 1.2 * math.sin(angle), 2.0)
        cameras.append(
            Camera(
                look_at(eye, (0, 0, 0)), 40.0, 40.0, width / 2, height / 2, width, height, f"v{k}"
            )
        )
    return cameras


def test_sinusoidal_encoding_matches_nerf():
    values = torch.tensor([[0.25, -0.5]])
    out = sinusoidal_encoding(values, 2)
    expected = [0.25, -0.5]
    for k in range(2):
        expected += [
            math.sin(2**k * math.pi * 0.25),
            math.sin(2**k * math.pi * -0.5),
            math.cos(2**k * math.pi * 0.25),
            math.cos(2**k * math.pi * -0.5),
        ]
    assert out.shape == (1, 10)
    assert torch.allclose(out, torch.tensor([expected]), atol=1e-6)


def test_an_untrained_deformation_is_the_canonical_scene_at_every_time():
    cloud = _cloud()
    field = DeformationField(torch.zeros(3), 1.0)
    camera = _cameras()[0]
    canonical = render(cloud, camera)["features"]
    for time in (0.0, 0.37, 1.0):
        moved = render(deform(cloud, field, time), camera)["features"]
        assert torch.equal(moved, canonical)


def test_gradients_reach_the_deformation_and_the_canonical_means():
    cloud = _cloud()
    field = DeformationField(torch.zeros(3), 1.0)
    out = render(deform(cloud, field, 0.5), _cameras()[0])["features"]
    (out * torch.rand_like(out)).sum().backward()
    last = field.net[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    assert cloud.means.grad is not None and cloud.means.grad.abs().sum() > 0


def test_a_deformation_offsets_means_by_its_output():
    cloud = _cloud(count=5)
    field = DeformationField(torch.zeros(3), 2.0)
    with torch.no_grad():
        field.net[-1].bias.copy_(torch.tensor([0.1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5, 0, 0, -1.0]))
    moved = deform(cloud, field, 0.5)
    # the mean offset is in units of the extent
    assert torch.allclose(moved.means - cloud.means, torch.tensor([0.2, 0.0, 0.0]).expand(5, 3))
    # the colour offset moves the degree-0 coefficients, the opacity offset the logits
    assert torch.allclose(moved.sh[:, 0] - cloud.sh[:, 0], torch.tensor([0.5, 0, 0]).expand(5, 3))
    assert torch.allclose(moved.opacity_logits - cloud.opacity_logits, torch.full((5,), -1.0))
    assert torch.equal(moved.log_scales, cloud.log_scales)


def test_status_weights_are_a_mixture_and_features_lie_between_prototypes():
    cloud = _cloud(count=30)
    status = StatusField(30, torch.zeros(3), 1.0, states=3, channels=2)
    weights = status.state_weights(cloud.means, 0.4)
    assert weights.shape == (30, 3)
    assert torch.allclose(weights.sum(1), torch.ones(30))
    features = status(cloud.means, 0.4)
    low = status.prototypes.min(dim=1).values
    high = status.prototypes.max(dim=1).values
    assert bool(((features >= low - 1e-6) & (features <= high + 1e-6)).all())


def _views_over_time(truth, times, *, offset=lambda t: 0.0, sh_sign=lambda t: 1.0):
    """Views from :func:`_cameras` at ``times`` of ``truth`` with its means moved by
    ``offset(t)`` and its colour coefficients multiplied by ``sh_sign(t)``."""
    views = []
    for time in times:
        state = GaussianCloud(
            truth.means.detach() + offset(time),
            truth.log_scales.detach(),
            truth.quaternions.detach(),
            truth.opacity_logits.detach(),
            sh_sign(time) * truth.sh.detach(),
        )
        for camera in _cameras():
            with torch.no_grad():
                image = render(state, camera, background=torch.zeros(3))["features"]
            views.append(View(camera, image.clamp(0, 1), time))
    return views


def _moving_views(times, velocity=(0.35, 0.0, 0.0)):
    """Views of a cloud that slides along ``velocity`` (world units over t in [0, 1])."""
    truth = _cloud(seed=1)
    return truth, _views_over_time(truth, times, offset=lambda t: t * torch.tensor(velocity))


def _uncoloured(truth):
    """``truth``'s geometry with zero colour coefficients: the start of a fit."""
    return GaussianCloud(
        truth.means.detach(),
        truth.log_scales.detach(),
        truth.quaternions.detach(),
        truth.opacity_logits.detach(),
        torch.zeros_like(truth.sh),
    )


@torch.no_grad()
def _mean_error(cloud, field, views):
    """Mean absolute pixel error of ``cloud`` (deformed by ``field`` at each view's time)."""
    errors = []
    for view in views:
        subject = deform(cloud, field, view.time)
        image = render(subject, view.camera, background=torch.zeros(3))["features"]
        errors.append(float((image - view.image).abs().mean()))
    return sum(errors) / len(errors)


def test_a_dynamic_fit_follows_motion_that_a_static_fit_cannot():
    torch.manual_seed(0)
    truth, views = _moving_views([0.0, 0.5, 1.0], velocity=(0.5, 0.0, 0.0))
    cfg = FitConfig(iterations=150, densify_from=1000, densify_until=1000, seed=0)
    results = {}
    for name in ("static", "dynamic"):
        cloud = _uncoloured(truth)
        field = DeformationField(torch.zeros(3), 1.0) if name == "dynamic" else None
        fit_rgb(
            cloud,
            views,
            cfg,
            progress=False,
            deformation=field,
            deformation_cfg=DeformationFitConfig(warm_up=20, lr=3e-3),
        )
        results[name] = _mean_error(cloud, field, views)
    # measured: static 0.065, dynamic 0.033 (the static fit can only blur the motion)
    assert results["dynamic"] < 0.75 * results["static"], results


def test_a_deformation_needs_times():
    _, views = _moving_views([0.0])
    untimed = [View(v.camera, v.image) for v in views]
    with pytest.raises(ValueError, match="time on every view"):
        fit_rgb(
            _cloud(),
            untimed,
            FitConfig(iterations=2),
            progress=False,
            deformation=DeformationField(torch.zeros(3), 1.0),
        )


@pytest.mark.parametrize("spacetime", [False, True], ids=["canonical", "spacetime"])
def test_an_interrupted_dynamic_fit_resumes(tmp_path, one_thread, spacetime):
    _, views = _moving_views([0.0, 1.0])
    cfg = FitConfig(
        iterations=40,
        densify_from=20,
        densify_until=35,
        densify_every=10,
        densify_grad=1e-6,
        checkpoint_every=10,
    )
    dcfg = DeformationFitConfig(warm_up=10)

    def run(checkpoint, steps):
        torch.manual_seed(0)
        cloud, field = _cloud(), DeformationField(torch.zeros(3), 1.0)
        if spacetime:
            cloud = SpacetimeCloud.from_cloud(cloud, slices=2)
        for budget in steps:
            fit_rgb(
                cloud,
                views,
                cfg,
                checkpoint=checkpoint,
                max_steps=budget,
                progress=False,
                deformation=field,
                deformation_cfg=dcfg,
            )
        return cloud, field

    whole_cloud, whole_field = run(tmp_path / "a.pt", [None])
    parts_cloud, parts_field = run(tmp_path / "b.pt", [25, None])
    assert len(whole_cloud) > 2 * 120 if spacetime else len(whole_cloud) > 120  # densified
    for name in whole_cloud.parameter_names:
        assert torch.equal(getattr(whole_cloud, name), getattr(parts_cloud, name)), name
    for a, b in zip(whole_field.parameters(), parts_field.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_status_field_learns_a_state_that_changes_over_time(one_thread):
    from ovseg.fields.fit import LatentFitConfig, fit_latents

    torch.manual_seed(0)
    cloud = _cloud(count=80)
    cameras = _cameras()
    before, after = torch.tensor([0.8, -0.2]), torch.tensor([-0.5, 0.6])
    times = [0.0, 0.25, 0.75, 1.0]
    views_cameras, targets, valid = [], [], []
    for t in times:
        for camera in cameras:
            with torch.no_grad():
                alpha = render(cloud, camera)["alpha"]
            covered = alpha > 0.5
            target = torch.zeros(camera.height, camera.width, 2)
            target[covered] = before if t < 0.5 else after
            views_cameras.append(camera)
            targets.append(target)
            valid.append(covered)
    frame_times = [t for t in times for _ in cameras]
    status = StatusField(len(cloud), torch.zeros(3), 1.0, states=2, channels=2)
    fit_latents(
        cloud,
        views_cameras,
        targets,
        valid,
        LatentFitConfig(iterations=150, lr=2e-2),
        progress=False,
        times=frame_times,
        status=status,
    )
    with torch.no_grad():
        for t, expected in ((0.1, before), (0.9, after)):
            latents = status(cloud.means, t)
            out = render(deform(cloud, None, t, latents=latents), cameras[0], what="latent")
            covered = render(cloud, cameras[0])["alpha"] > 0.5
            mean = out["features"][covered].mean(0)
            assert torch.allclose(mean, expected, atol=0.15), (t, mean, expected)
    # the cloud's own latents and geometry were not touched
    assert cloud.latents.numel() == 0 and cloud.means.requires_grad


def test_spacetime_gaussians_fade_and_move_by_the_formula():
    cloud = SpacetimeCloud.from_cloud(_cloud(count=4), slices=2)
    assert len(cloud) == 8
    assert torch.allclose(cloud.time_centres, torch.tensor([0.25] * 4 + [0.75] * 4))
    assert torch.allclose(cloud.time_log_scales.exp(), torch.full((8,), 0.5))
    with torch.no_grad():
        cloud.velocities[:] = torch.tensor([1.0, -2.0, 0.5])
    # at its centre a Gaussian is fully there; one temporal scale away, exp(-1/2) of it
    assert torch.allclose(cloud.temporal_opacity(0.25)[:4], torch.ones(4))
    assert torch.allclose(cloud.temporal_opacity(0.75)[:4], torch.full((4,), math.exp(-0.5)))
    at = deform(cloud, None, 0.75)
    expected = cloud.means + torch.tensor([1.0, -2.0, 0.5]) * (0.75 - cloud.time_centres[:, None])
    assert torch.allclose(at.means, expected)
    assert torch.allclose(at.opacities, cloud.opacities * cloud.temporal_opacity(0.75))


def test_a_split_in_time_halves_the_span_around_the_parent():
    cloud = SpacetimeCloud.from_cloud(_cloud(count=3))
    params = {name: getattr(cloud, name).detach() for name in cloud.parameter_names}
    children = split_in_time(params)
    assert torch.allclose(children["time_centres"], torch.tensor([0.0] * 3 + [1.0] * 3))
    assert torch.allclose(children["time_log_scales"].exp(), torch.full((6,), 0.5))
    for name in ("means", "sh", "opacity_logits", "velocities"):
        assert torch.equal(children[name], params[name].repeat(2, *[1] * (params[name].dim() - 1)))


def test_densification_splits_long_lived_gaussians_in_time_and_prunes_unseen_ones():
    from ovseg.fields.fit import _densify_and_prune

    cloud = SpacetimeCloud.from_cloud(_cloud(count=5))  # scale 1: long-lived
    with torch.no_grad():
        cloud.time_log_scales[1] = math.log(0.05)  # short-lived: a spatial clone or split
        cloud.time_centres[4], cloud.time_log_scales[4] = 2.0, math.log(0.1)  # after the video
    gradient = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    cfg = FitConfig(densify_grad=0.5)  # in a scene of extent 100 they are small: clones
    _densify_and_prune(cloud, gradient, cfg, 100.0, torch.Generator().manual_seed(0))
    spans = sorted(cloud.time_log_scales.detach().exp().tolist())
    # kept 1 (clone's parent), 2, 3; added 1's clone and 0's two halves; dropped 0 and 4
    assert len(cloud) == 6
    assert spans == pytest.approx([0.05, 0.05, 0.5, 0.5, 1.0, 1.0])
    assert float(cloud.time_centres.detach().max()) <= 1.0


def test_a_spacetime_fit_shows_a_change_of_state_that_a_static_fit_blurs(one_thread):
    """The scene turns from one set of colours to another halfway: a static cloud can only
    show their mean; temporal opacity lets each half of the Gaussians hold one state."""
    torch.manual_seed(0)
    truth = _cloud(seed=1)
    times = (0.0, 0.2, 0.8, 1.0)
    views = _views_over_time(truth, times, sh_sign=lambda t: 1.0 if t < 0.5 else -1.0)
    cfg = FitConfig(iterations=400, densify_from=1000, densify_until=1000, seed=0)
    errors = {}
    for name in ("static", "spacetime"):
        cloud = _uncoloured(truth)
        if name == "spacetime":
            cloud = SpacetimeCloud.from_cloud(cloud, slices=2)
        fit_rgb(cloud, views, cfg, progress=False)
        errors[name] = _mean_error(cloud, None, views)
    # measured: static 0.032 (its best is the two states' mean), spacetime 0.012
    assert errors["spacetime"] < 0.6 * errors["static"], errors
