"""Fitting Gaussians: the colour fit's loss falls and it densifies; a resumed fit ends where
an uninterrupted one does; the language-latent fit moves only the latents."""

import math

import pytest
import torch

from ovseg.fields.camera import Camera, look_at
from ovseg.fields.fit import FitConfig, LatentFitConfig, View, fit_latents, fit_rgb, ssim
from ovseg.fields.gaussians import GaussianCloud
from ovseg.fields.rasterizer import render


def _cameras(count=4, size=(24, 20)):
    cameras = []
    for k in range(count):
        angle = 2 * math.pi * k / count
        eye = (2.5 * math.cos(angle), 2.5 * math.sin(angle), 1.5)
        cameras.append(
            Camera(look_at(eye, (0, 0, 0)), 24.0, 24.0, size[0] / 2, size[1] / 2, *size, f"v{k}")
        )
    return cameras


def _teacher_views(cameras):
    gen = torch.Generator().manual_seed(3)
    teacher = GaussianCloud.from_points(
        (torch.rand(40, 3, generator=gen) - 0.5) * 1.2,
        torch.rand(40, 3, generator=gen),
        opacity=0.8,
    )
    with torch.no_grad():
        teacher.log_scales.add_(math.log(1.5))
        return [View(c, render(teacher, c)["features"].clamp(0, 1)) for c in cameras]


def _student():
    gen = torch.Generator().manual_seed(5)
    return GaussianCloud.from_points(
        (torch.rand(30, 3, generator=gen) - 0.5) * 1.2, torch.full((30, 3), 0.5), latent_dim=3
    )


def _config(**changes):
    base = dict(
        iterations=40,
        densify_from=10,
        densify_until=35,
        densify_every=10,
        densify_grad=1e-7,
        checkpoint_every=10,
    )
    return FitConfig(**{**base, **changes})


def test_the_colour_fit_lowers_the_loss_and_densifies():
    views = _teacher_views(_cameras())
    cloud = _student()
    with torch.no_grad():
        before = sum(
            float((render(cloud, v.camera)["features"] - v.image).abs().mean()) for v in views
        )
    result = fit_rgb(cloud, views, _config(iterations=80, lr_sh=0.02), progress=False)
    with torch.no_grad():
        after = sum(
            float((render(cloud, v.camera)["features"] - v.image).abs().mean()) for v in views
        )
    assert after < 0.7 * before
    assert result["gaussians"] == len(cloud) > 30  # the tiny threshold densifies


def test_a_resumed_fit_ends_where_an_uninterrupted_one_does(tmp_path):
    views = _teacher_views(_cameras())
    straight = _student()
    fit_rgb(straight, views, _config(), checkpoint=tmp_path / "a.pt", progress=False)
    resumed = _student()
    first = fit_rgb(
        resumed, views, _config(), checkpoint=tmp_path / "b.pt", max_steps=15, progress=False
    )
    assert first["iteration"] == 15
    again = _student()  # a fresh process: the checkpoint holds everything
    second = fit_rgb(again, views, _config(), checkpoint=tmp_path / "b.pt", progress=False)
    assert second["iteration"] == 40
    assert len(again) == len(straight)
    for name in ("means", "log_scales", "sh", "opacity_logits"):
        torch.testing.assert_close(getattr(again, name), getattr(straight, name))
    with pytest.raises(ValueError, match="other settings.*iterations"):
        fit_rgb(
            _student(), views, _config(iterations=50), checkpoint=tmp_path / "b.pt", progress=False
        )


def test_the_latent_fit_moves_only_the_latents():
    cameras = _cameras()
    cloud = _student()
    geometry = {n: getattr(cloud, n).detach().clone() for n in ("means", "sh", "log_scales")}
    targets = [torch.tensor([0.3, -0.2, 0.5]).expand(c.height, c.width, 3) for c in cameras]
    valid = []
    for camera in cameras:
        with torch.no_grad():
            valid.append(render(cloud, camera)["alpha"] > 0.5)
    assert all(bool(v.any()) for v in valid)
    result = fit_latents(
        cloud, cameras, targets, valid, LatentFitConfig(iterations=150, lr=0.05), progress=False
    )
    for name, value in geometry.items():
        assert torch.equal(getattr(cloud, name).detach(), value), name
    with torch.no_grad():
        latent = render(cloud, cameras[0], what="latent")["features"][valid[0]]
    assert (latent - torch.tensor([0.3, -0.2, 0.5])).abs().mean() < 0.05
    assert result["loss"] < 0.1


def test_ssim_is_one_for_equal_images_and_lower_for_noise():
    image = torch.rand(20, 24, 3)
    assert float(ssim(image, image)) == pytest.approx(1.0, abs=1e-6)
    noisy = (image + 0.2 * torch.randn_like(image)).clamp(0, 1)
    assert float(ssim(image, noisy)) < 0.9


def test_the_language_iterations_visit_each_training_view_about_eleven_times():
    from ovseg.fields.fit import language_iterations

    assert language_iterations(24) == 300  # the 3D world: the floor
    assert language_iterations(90) == 1000  # the 4D bench: 990 rounded up
    assert language_iterations(108) == 1200
    assert language_iterations(90, visits=2, minimum=100) == 200
    with pytest.raises(ValueError, match="training view"):
        language_iterations(0)


def test_the_colour_fit_for_n_iterations_densifies_over_its_first_two_thirds():
    from ovseg.fields.fit import colour_config

    cfg = colour_config(600)
    assert (cfg.iterations, cfg.densify_from, cfg.densify_until) == (600, 100, 400)
    short = colour_config(30)  # densification still starts before it stops
    assert (short.iterations, short.densify_from, short.densify_until) == (30, 20, 20)
    assert colour_config(1).densify_until == 1
