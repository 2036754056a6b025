"""The pure-PyTorch Gaussian rasterizer against a per-pixel loop written here from the 3DGS
rules, gradcheck in float64, and the properties a renderer must have."""

import math

import pytest
import torch

from ovseg.fields.camera import Camera, camera_from_opengl, look_at, opengl_from_camera
from ovseg.fields.gaussians import GaussianCloud, covariance_3d, quaternion_to_rotation
from ovseg.fields.rasterizer import project_gaussians, rasterize, render


def _camera(width=20, height=18, eye=(0.0, -4.0, 1.0)):
    return Camera(
        look_at(eye, (0.0, 0.0, 0.0)),
        22.0,
        21.0,
        width / 2 + 0.3,
        height / 2 - 0.2,
        width,
        height,
        "test",
    )


def _scene(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = 9
    means = (torch.rand(n, 3, generator=gen, dtype=dtype) - 0.5) * 1.6
    # three nearly opaque Gaussians stacked on the view axis: the third must be cut by the
    # transmittance rule (0.99 * 0.99 leaves T = 1e-4 after two)
    means[6:] = torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.0, 0.0], [0.0, -0.3, 0.0]], dtype=dtype)
    log_scales = torch.log(0.05 + 0.25 * torch.rand(n, 3, generator=gen, dtype=dtype))
    quats = torch.randn(n, 4, generator=gen, dtype=dtype)
    opacity_logits = torch.randn(n, generator=gen, dtype=dtype)
    opacity_logits[6:] = 12.0
    features = torch.rand(n, 4, generator=gen, dtype=dtype)
    return means, log_scales, quats, opacity_logits, features


def _brute_force(means, log_scales, quats, opacity_logits, features, camera):
    """Per pixel, per Gaussian, in depth order: the 3DGS forward pass with ovseg's per-pixel
    footprint (a pixel centre inside the 3-sigma square)."""
    cov3 = covariance_3d(log_scales.exp(), quats)
    rotation, translation = camera.rotation.double(), camera.translation.double()
    splats = []
    for i in range(means.shape[0]):
        t = rotation @ means[i] + translation
        if t[2] <= 0.01:
            continue
        # gsplat's persp_proj: 0.3 x tan(fov / 2) beyond the image's edges
        tan_x, tan_y = 0.5 * camera.width / camera.fx, 0.5 * camera.height / camera.fy
        lim_x = (camera.width - camera.cx) / camera.fx + 0.3 * tan_x
        lim_xn = camera.cx / camera.fx + 0.3 * tan_x
        lim_y = (camera.height - camera.cy) / camera.fy + 0.3 * tan_y
        lim_yn = camera.cy / camera.fy + 0.3 * tan_y
        xz = min(max(float(t[0] / t[2]), -lim_xn), lim_x)
        yz = min(max(float(t[1] / t[2]), -lim_yn), lim_y)
        jac = torch.tensor(
            [
                [camera.fx / t[2], 0.0, -camera.fx * xz / t[2]],
                [0.0, camera.fy / t[2], -camera.fy * yz / t[2]],
            ],
            dtype=torch.float64,
        )
        cov2 = jac @ rotation @ cov3[i] @ rotation.T @ jac.T + 0.3 * torch.eye(
            2, dtype=torch.float64
        )
        eig_max = float(torch.linalg.eigvalsh(cov2).max())
        radius = math.ceil(3 * math.sqrt(eig_max))
        centre = (camera.fx * t[0] / t[2] + camera.cx, camera.fy * t[1] / t[2] + camera.cy)
        splats.append((float(t[2]), i, centre, torch.linalg.inv(cov2), radius))
    splats.sort(key=lambda s: (s[0], s[1]))
    opacities = torch.sigmoid(opacity_logits)
    image = torch.zeros(camera.height, camera.width, features.shape[1], dtype=torch.float64)
    alpha_image = torch.zeros(camera.height, camera.width, dtype=torch.float64)
    depth_image = torch.zeros(camera.height, camera.width, dtype=torch.float64)
    for row in range(camera.height):
        for col in range(camera.width):
            px, py = col + 0.5, row + 0.5
            transmittance = 1.0
            for depth, i, centre, conic, radius in splats:
                dx, dy = px - float(centre[0]), py - float(centre[1])
                if abs(dx) > radius or abs(dy) > radius:
                    continue
                d = torch.tensor([dx, dy], dtype=torch.float64)
                alpha = min(0.99, float(opacities[i]) * math.exp(-0.5 * float(d @ conic @ d)))
                if alpha < 1 / 255:
                    continue
                if transmittance * (1 - alpha) < 1e-4:
                    break
                image[row, col] += features[i] * alpha * transmittance
                alpha_image[row, col] += alpha * transmittance
                depth_image[row, col] += depth * alpha * transmittance
                transmittance *= 1 - alpha
    return image, alpha_image, depth_image


def _render(means, log_scales, quats, opacity_logits, features, camera, **kwargs):
    projection = project_gaussians(means, covariance_3d(log_scales.exp(), quats), camera)
    return rasterize(
        projection, torch.sigmoid(opacity_logits), features, camera.width, camera.height, **kwargs
    )


@pytest.mark.parametrize("chunk_elements", [1 << 22, 300])
def test_rasterizer_equals_a_per_pixel_loop(chunk_elements):
    scene = _scene()
    camera = _camera()
    out = _render(*scene, camera, chunk_elements=chunk_elements)
    image, alpha, depth = _brute_force(*scene, camera)
    assert alpha.max() > 0.9, "the scene must cover some pixels"
    torch.testing.assert_close(out["features"], image, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(out["alpha"], alpha, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(out["depth"], depth, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("opacity, third_seen", [(0.9999, False), (0.98, True)])
def test_the_transmittance_rule_stops_behind_two_opaque_gaussians(opacity, third_seen):
    """Two Gaussians at alpha 0.99 (the cap) leave T = 1e-4 after them, so 3DGS stops before
    a third at alpha 0.5 (T would become 5e-5); at alpha 0.98 the third still shows (T = 4e-4
    before it, 2e-4 after)."""
    camera = Camera(torch.eye(4), 30.0, 30.0, 8.5, 8.5, 17, 17)  # means on pixel (8, 8)
    cloud = GaussianCloud(
        torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 4.0], [0.0, 0.0, 5.0]]),
        torch.full((3, 3), math.log(0.5)),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3),
        torch.logit(torch.tensor([opacity, opacity, 0.5])),
        torch.zeros(3, 1, 3),
        torch.tensor([[0.0], [0.0], [1.0]]),  # only the farthest carries a latent
    )
    with torch.no_grad():
        centre = render(cloud, camera, what="latent")["features"][8, 8, 0].item()
    if third_seen:
        assert centre == pytest.approx(0.5 * 0.02 * 0.02, rel=1e-3)
    else:
        assert centre == 0.0


def test_gradcheck_float64():
    means, log_scales, quats, opacity_logits, features = _scene(seed=1)
    keep = [0, 1, 2, 3]
    inputs = [
        t[keep].clone().requires_grad_(True)
        for t in (means, log_scales, quats, opacity_logits, features)
    ]
    camera = _camera(width=10, height=9, eye=(0.0, -3.0, 0.5))

    def fn(*args):
        out = _render(*args, camera, chunk_elements=200)
        return out["features"], out["alpha"], out["depth"]

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("opacity, expected", [(0.5, 0.5), (0.999, 0.99)])
def test_a_single_gaussian_peaks_at_its_opacity_capped_at_099(opacity, expected):
    camera = Camera(torch.eye(4), 30.0, 30.0, 8.5, 8.5, 17, 17)  # looks down +z
    cloud = GaussianCloud(
        torch.tensor([[0.0, 0.0, 5.0]]),
        torch.full((1, 3), math.log(0.2)),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        torch.logit(torch.tensor([opacity])),
        torch.zeros(1, 1, 3),
    )
    with torch.no_grad():
        out = render(cloud, camera)
    assert out["alpha"].max().item() == pytest.approx(expected, abs=1e-5)
    assert tuple(torch.nonzero(out["alpha"] == out["alpha"].max())[0].tolist()) == (8, 8)


def test_occlusion_follows_depth():
    camera = Camera(torch.eye(4), 30.0, 30.0, 8.0, 8.0, 16, 16)
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])

    def centre_colour(depths):
        cloud = GaussianCloud.from_points(
            torch.tensor([[0.0, 0.0, depths[0]], [0.0, 0.0, depths[1]]]), colours, opacity=0.95
        )
        with torch.no_grad():
            cloud.log_scales.fill_(math.log(0.3))
            return render(cloud, camera)["features"][8, 8]

    red_in_front = centre_colour((3.0, 5.0))
    blue_in_front = centre_colour((5.0, 3.0))
    assert red_in_front[0] > 0.9 and red_in_front[2] < 0.1
    assert blue_in_front[2] > 0.9 and blue_in_front[0] < 0.1


def test_gaussians_behind_the_camera_or_off_screen_are_invisible():
    camera = Camera(torch.eye(4), 30.0, 30.0, 8.0, 8.0, 16, 16)
    means = torch.tensor([[0.0, 0.0, -2.0], [100.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    cov = covariance_3d(torch.full((3, 3), 0.1), torch.tensor([[1.0, 0, 0, 0]] * 3))
    assert project_gaussians(means, cov, camera).visible.tolist() == [False, False, True]


def test_background_fills_what_the_gaussians_leave():
    camera = Camera(torch.eye(4), 30.0, 30.0, 8.0, 8.0, 16, 16)
    cloud = GaussianCloud.from_points(torch.tensor([[0.0, 0.0, 4.0]]), torch.ones(1, 3))
    with torch.no_grad():
        cloud.log_scales.fill_(math.log(0.1))
        out = render(cloud, camera, background=torch.tensor([0.0, 1.0, 0.0]))
    corner, centre = out["features"][0, 0], out["features"][8, 8]
    assert out["alpha"][0, 0] == 0 and corner.tolist() == [0.0, 1.0, 0.0]
    expected = torch.tensor([1.0, 1.0, 1.0]) * out["alpha"][8, 8] + torch.tensor(
        [0.0, 1.0, 0.0]
    ) * (1 - out["alpha"][8, 8])
    torch.testing.assert_close(centre, expected)


def test_quaternions_give_rotations():
    rot = quaternion_to_rotation(torch.randn(5, 4, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(5, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), eye)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(5, dtype=torch.float64))


def test_look_at_puts_the_target_at_the_principal_point_and_opengl_round_trips():
    camera = Camera(look_at((2.0, -3.0, 1.5), (0.2, 0.1, 0.0)), 50.0, 50.0, 32.0, 24.0, 64, 48)
    pixel, depth = camera.project(torch.tensor([[0.2, 0.1, 0.0]]))
    torch.testing.assert_close(pixel[0], torch.tensor([32.0, 24.0]), atol=1e-4, rtol=0)
    assert depth.item() > 0
    torch.testing.assert_close(camera.centre, torch.tensor([2.0, -3.0, 1.5]), atol=1e-5, rtol=0)
    again = camera_from_opengl(
        opengl_from_camera(camera), fx=50.0, fy=50.0, cx=32.0, cy=24.0, width=64, height=48
    )
    torch.testing.assert_close(again.world_to_camera, camera.world_to_camera, atol=1e-5, rtol=0)
    # the world's up is the image's up: a point above the target projects higher (smaller v)
    above, _ = camera.project(torch.tensor([[0.2, 0.1, 0.5]]))
    assert above[0, 1] < 24.0


def test_bad_poses_are_refused_in_one_line():
    with pytest.raises(ValueError, match="NaN"):
        Camera(torch.full((4, 4), float("nan")), 10.0, 10.0, 5.0, 5.0, 10, 10, "v0")
    with pytest.raises(ValueError, match="focal"):
        Camera(torch.eye(4), 0.0, 10.0, 5.0, 5.0, 10, 10, "v0")
    scaled = torch.eye(4)
    scaled[:3, :3] *= 2
    with pytest.raises(ValueError, match="not a rotation"):
        Camera(scaled, 10.0, 10.0, 5.0, 5.0, 10, 10, "v0")


def test_recomputed_chunks_give_the_same_gradients():
    scene = [t.float().clone().requires_grad_(True) for t in _scene()]
    camera = _camera()
    grads = []
    for checkpoint_above in (0, 1 << 30):  # every chunk recomputed / none
        for t in scene:
            t.grad = None
        out = _render(*scene, camera, chunk_elements=500, checkpoint_above=checkpoint_above)
        (out["features"].square().sum() + out["depth"].sum()).backward()
        grads.append([t.grad.clone() for t in scene])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_degree_one_colour_follows_the_view_direction():
    from ovseg.fields.gaussians import SH_C0, SH_C1, sh_to_rgb

    sh = torch.zeros(1, 4, 3)
    sh[0, 0] = 0.2
    sh[0, 3] = torch.tensor([0.5, 0.0, -0.5])  # the x basis function
    for direction in ([1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]):
        d = torch.tensor([direction])
        expected = (SH_C0 * 0.2 - SH_C1 * d[0, 0] * sh[0, 3] + 0.5).clamp_min(0)
        torch.testing.assert_close(sh_to_rgb(sh, d)[0], expected)
    cloud = GaussianCloud.from_points(torch.zeros(1, 3), torch.full((1, 3), 0.5), sh_degree=1)
    with torch.no_grad():
        cloud.sh[0, 3] = torch.tensor([0.5, 0.0, -0.5])
    left = cloud.colours(torch.tensor([-2.0, 0.0, 0.0]))
    right = cloud.colours(torch.tensor([2.0, 0.0, 0.0]))
    # seen from -x the direction is +x: red down, blue up (the basis is -C1 x)
    assert left[0, 0] < 0.5 < right[0, 0] and left[0, 2] > 0.5 > right[0, 2]
