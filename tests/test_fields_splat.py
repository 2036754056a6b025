"""3DGS PLY files, SH to degree 3, the compiled forward pass against the PyTorch rasterizer,
and training-free lifting of segment features onto a ground-truth splat."""

import math

import numpy as np
import pytest
import torch

from ovseg.fields.camera import Camera, look_at
from ovseg.fields.fast_raster import render_fast
from ovseg.fields.gaussians import GaussianCloud, covariance_3d, sh_to_rgb
from ovseg.fields.lift import LiftConfig, finish_mixture, lift_segments, mixture_norms
from ovseg.fields.rasterizer import project_gaussians, rasterize
from ovseg.fields.splat_ply import Splat, SplatError, read_splat, write_splat


def _cloud(n=300, degree=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return GaussianCloud(
        (torch.rand(n, 3, generator=gen) - 0.5) * 2,
        torch.log(0.01 + 0.08 * torch.rand(n, 3, generator=gen)),
        torch.randn(n, 4, generator=gen),
        torch.randn(n, generator=gen) * 2,
        torch.randn(n, (degree + 1) ** 2, 3, generator=gen),
    )


def _camera(width=96, height=72):
    return Camera(
        look_at((0.3, -3.0, 1.4), (0, 0, 0)),
        80.0,
        82.0,
        width / 2 + 0.7,
        height / 2 - 0.4,
        width,
        height,
        "cam",
    )


def test_ply_round_trip_keeps_every_property(tmp_path):
    cloud = _cloud()
    extra = {
        "nx": np.zeros(300, np.float32),
        "ny": np.ones(300, np.float32),
        "nz": np.zeros(300, np.float32),
        "trainer_id": np.arange(300, dtype=np.float32),
    }
    write_splat(tmp_path / "a.ply", Splat(cloud, extra))
    back = read_splat(tmp_path / "a.ply")
    for name in ("means", "log_scales", "quaternions", "opacity_logits", "sh"):
        assert torch.equal(getattr(back.cloud, name), getattr(cloud, name).detach()), name
    assert list(back.extra) == ["nx", "ny", "nz", "trainer_id"]
    assert all(np.array_equal(back.extra[k], extra[k]) for k in extra)
    # the same file read by a third party: the 3DGS names in the 3DGS order
    import trimesh

    raw = trimesh.load(tmp_path / "a.ply", process=False).metadata["_ply_raw"]["vertex"]["data"]
    names = raw.dtype.names
    assert names[:9] == ("x", "y", "z", "nx", "ny", "nz", "trainer_id", "f_dc_0", "f_dc_1")
    assert names[-8:] == (
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    )
    # f_rest is channel-major, as 3DGS's save_ply writes it: f_rest_{c * 15 + j}
    assert np.array_equal(raw["f_rest_16"], cloud.sh.detach()[:, 2, 1].numpy())


def test_ascii_ply_reads_like_binary(tmp_path):
    cloud = _cloud(n=5, degree=1)
    write_splat(tmp_path / "b.ply", Splat(cloud))
    binary = read_splat(tmp_path / "b.ply")
    import trimesh

    raw = trimesh.load(tmp_path / "b.ply", process=False).metadata["_ply_raw"]["vertex"]["data"]
    header = ["ply", "format ascii 1.0", "element vertex 5"]
    header += [f"property float {name}" for name in raw.dtype.names] + ["end_header"]
    rows = [" ".join(repr(float(v)) for v in row) for row in raw.tolist()]
    (tmp_path / "a.ply").write_text("\n".join(header + rows) + "\n")
    text = read_splat(tmp_path / "a.ply")
    assert torch.equal(text.cloud.sh, binary.cloud.sh) and text.cloud.sh_degree == 1
    assert torch.equal(text.cloud.means, binary.cloud.means)


def test_bad_splats_are_refused_in_one_line(tmp_path):
    import trimesh

    trimesh.creation.box().export(tmp_path / "mesh.ply")
    with pytest.raises(SplatError, match="not a Gaussian splat.*lack f_dc_0.*3DGS trainer"):
        read_splat(tmp_path / "mesh.ply")
    write_splat(tmp_path / "good.ply", Splat(_cloud(n=20)))
    data = (tmp_path / "good.ply").read_bytes()
    (tmp_path / "short.ply").write_bytes(data[:-50])
    with pytest.raises(SplatError, match="header says 20 vertices but the data holds 19"):
        read_splat(tmp_path / "short.ply")
    for name, tensor, message in (
        ("nan.ply", "means", "'x' is NaN or infinite at 1 vertices"),
        ("zero.ply", "quaternions", "zero rotation quaternion"),
    ):
        cloud = _cloud(n=20)
        values = getattr(cloud, tensor).detach()
        values[3] = float("nan") if tensor == "means" else 0.0
        write_splat(tmp_path / name, Splat(cloud))
        with pytest.raises(SplatError, match=message):
            read_splat(tmp_path / name)
    (tmp_path / "text.ply").write_text("hello")
    with pytest.raises(SplatError, match="not a PLY file"):
        read_splat(tmp_path / "text.ply")
    assert issubclass(SplatError, ValueError)  # the CLIs' one-line errors catch ValueError


def test_sh_bases_to_degree_3_are_orthonormal():
    """Each coefficient alone renders its real SH basis function Y_k; over the sphere
    mean(Y_i Y_j) = delta_ij / (4 pi) (a typo in any constant or sign breaks it)."""
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(400_000, 3, generator=gen, dtype=torch.float64)
    directions = torch.nn.functional.normalize(directions, dim=1)
    values = []
    for k in range(16):
        sh = torch.zeros(len(directions), 16, 3, dtype=torch.float64)
        sh[:, 0] = 40.0  # keeps the colour above the clamp at 0
        sh[:, k, 0] += 1.0 if k else 0.0
        values.append(sh_to_rgb(sh, directions)[:, 0] - sh_to_rgb(sh[:, :1], None)[:, 0])
    basis = torch.stack(values[1:], 1)  # (D, 15): Y_1 .. Y_15
    gram = basis.T @ basis / len(directions) * 4 * math.pi
    assert torch.allclose(gram, torch.eye(15, dtype=torch.float64), atol=0.02)


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_compiled_forward_pass_equals_the_pytorch_rasterizer(blocks):
    cloud, camera = _cloud(n=400, degree=1), _camera()
    covariances = covariance_3d(cloud.scales, cloud.quaternions).detach()
    projection = project_gaussians(cloud.means.detach(), covariances, camera)
    features = torch.rand(400, 5)
    opacities = cloud.opacities.detach()
    reference = rasterize(projection, opacities, features, camera.width, camera.height)
    fast = render_fast(projection, opacities, features, camera.width, camera.height, blocks=blocks)
    assert reference["alpha"].max() > 0.9  # a scene with saturated pixels and stops
    for key in ("features", "alpha", "depth"):
        torch.testing.assert_close(fast[key], reference[key], atol=2e-6, rtol=1e-5)


def test_segment_weights_are_the_blending_weights_per_segment():
    cloud, camera = _cloud(n=400, degree=0), _camera()
    covariances = covariance_3d(cloud.scales, cloud.quaternions).detach()
    projection = project_gaussians(cloud.means.detach(), covariances, camera)
    segments = np.full((camera.height, camera.width), -1)
    segments[:, : camera.width // 2] = 0  # left half segment 0, a quarter 1, a quarter void
    segments[: camera.height // 2, camera.width // 2 :] = 1
    opacities = cloud.opacities.detach()
    one = render_fast(
        projection, opacities, None, camera.width, camera.height, segments=segments, blocks=1
    )
    two = render_fast(
        projection, opacities, None, camera.width, camera.height, segments=segments, blocks=2
    )
    for found in (one["segment_weights"], two["segment_weights"]):
        assert found.dropped == 0
        for k in (0, 1):  # each segment's weights add up to its pixels' alpha
            expected = float(one["alpha"][torch.from_numpy(segments == k)].sum())
            assert found.weights[found.segments == k].sum() == pytest.approx(expected, rel=1e-5)
    # per Gaussian: its weight on segment 0 equals its rendered 'indicator' over those pixels
    g = int(one["segment_weights"].gaussians[np.argmax(one["segment_weights"].weights)])
    indicator = torch.zeros(400, 1)
    indicator[g] = 1.0
    alone = render_fast(projection, opacities, indicator, camera.width, camera.height)
    found = one["segment_weights"]
    for k in (0, 1):
        pick = (found.gaussians == g) & (found.segments == k)
        expected = float(alone["features"][..., 0][torch.from_numpy(segments == k)].sum())
        assert float(found.weights[pick].sum()) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_projection_clamps_at_gsplat_limits():
    """A Gaussian centred at x / z = 1.45 (tan(fov / 2) = 1): gsplat's and 3DGS's Jacobian
    is taken at their limit 1.3 x tan(fov / 2) (the old 1.6 let it through unclamped)."""
    camera = Camera(torch.eye(4), 50.0, 50.0, 50.0, 40.0, 100, 80, "c")
    means = torch.tensor([[1.45 * 2.0, 0.0, 2.0]])
    covariances = torch.diag(torch.tensor([0.3, 0.2, 0.5]))[None]
    projection = project_gaussians(means, covariances, camera)
    jacobian = torch.tensor(
        [[camera.fx / 2.0, 0.0, -camera.fx * 1.3 / 2.0], [0.0, camera.fy / 2.0, 0.0]]
    )
    conic = torch.linalg.inv(jacobian @ covariances[0] @ jacobian.T + 0.3 * torch.eye(2))
    expected = torch.stack([conic[0, 0], conic[0, 1], conic[1, 1]])
    torch.testing.assert_close(projection.conics[0], expected, rtol=1e-5, atol=0)


def _gt_world(tmp_path, gaussians=20_000, views=6):
    from ovseg.synthetic.splat3d import write_splat_world

    return write_splat_world(
        tmp_path / "world",
        0,
        1,
        gaussians=gaussians,
        train_views=views,
        test_views=1,
        width=96,
        height=72,
        progress=False,
    )


def _segment_maps(scene_dir, cameras):
    from PIL import Image

    maps = []
    for camera in cameras:
        segment = np.asarray(Image.open(scene_dir / "segments" / f"{camera.name}.png"))
        maps.append(np.where(segment == 255, -1, segment.astype(np.int64)))
    return maps


def test_lifting_ground_truth_segments_recovers_each_gaussians_segment(tmp_path):
    """Features = one-hot of the true segment: every lifted Gaussian's feature must point at
    its own segment (Occam's LGS averaging with the splat's own blending weights)."""
    from ovseg.fields.posed_images import load_posed_images

    scene_dir = _gt_world(tmp_path)
    splat = read_splat(scene_dir / "splat.ply")
    truth = np.load(scene_dir / "gaussian_segments.npy")
    scene = load_posed_images(scene_dir)
    cameras = [scene.cameras[i] for i in scene.split("train")]
    maps = _segment_maps(scene_dir, cameras)
    cfg = LiftConfig(mixture=4, min_weight=0.5)
    state = lift_segments(splat, cameras, maps, cfg, progress=False)
    count = max(int(truth.max()), max(int(m.max()) for m in maps)) + 1
    # each view's segments are global ids offset by the views before; embed each as its class
    per_view = [
        torch.nn.functional.one_hot(torch.arange(int(m.max()) + 1), count).float() for m in maps
    ]
    tensors = finish_mixture(state, torch.cat(per_view), cfg)
    from ovseg.fields.lift import LiftedField

    field = LiftedField(tmp_path, {}, splat, tensors, predictor=None)
    cosines = field.gaussian_cosines(torch.eye(count))  # (segments, N)
    lifted = field.lifted.numpy()
    assert lifted.mean() > 0.3  # six small views see a good part of the scene well enough
    predicted = cosines.argmax(0).numpy()
    assert (predicted[lifted] == truth[lifted]).mean() > 0.97
    # the norm stored equals the mixture's own length
    s, w = tensors["mixture_segments"].long(), tensors["mixture_weights"].float()
    e = tensors["segment_embeddings"].float()
    direct = (w[..., None] * e[s.clamp_min(0)] * (s >= 0)[..., None]).sum(1).norm(dim=1)
    torch.testing.assert_close(mixture_norms(e, s, w), direct, atol=1e-5, rtol=1e-5)


def test_an_interrupted_lift_resumes_to_the_same_mixtures(tmp_path):
    from ovseg.fields.posed_images import load_posed_images

    scene_dir = _gt_world(tmp_path, gaussians=5_000, views=4)
    splat = read_splat(scene_dir / "splat.ply")
    scene = load_posed_images(scene_dir)
    cameras = [scene.cameras[i] for i in scene.split("train")]
    maps = _segment_maps(scene_dir, cameras)
    cfg = LiftConfig()
    whole = lift_segments(splat, cameras, maps, cfg, progress=False)

    class Interrupting(list):
        def __getitem__(self, index):
            if index == 2:
                raise KeyboardInterrupt
            return super().__getitem__(index)

    state_path = tmp_path / "lift_state.npz"
    with pytest.raises(KeyboardInterrupt):
        lift_segments(
            splat,
            cameras,
            Interrupting(maps),
            cfg,
            state_path=state_path,
            progress=False,
            checkpoint_seconds=0.0,
        )
    assert state_path.is_file()
    resumed = lift_segments(splat, cameras, maps, cfg, state_path=state_path, progress=False)
    for key in ("segments", "weights", "total"):
        assert torch.equal(resumed[key], whole[key]), key


def test_compiled_projection_equals_pytorch():
    """Including Gaussians behind the camera, off-screen and beyond the Jacobian's clamp."""
    from ovseg.fields.fast_raster import project_fast

    cloud, camera = _cloud(n=2000, degree=0, seed=3), _camera()
    means = cloud.means.detach() * 4  # spread: some behind, some far off-screen
    covariances = covariance_3d(cloud.scales, cloud.quaternions).detach()
    reference = project_gaussians(means, covariances, camera)
    fast = project_fast(means, covariances, camera)
    assert 0 < int(reference.visible.sum()) < 2000
    either = fast.visible | reference.visible  # invisible ones' radii are not used
    same = fast.radii == reference.radii
    assert same[either].float().mean() > 0.995  # ceil(3 sqrt(lambda)) may flip at an integer
    assert torch.equal(fast.visible[same], reference.visible[same])
    shown = reference.visible & same
    torch.testing.assert_close(fast.means2d[shown], reference.means2d[shown], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(fast.conics[shown], reference.conics[shown], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(fast.depths, reference.depths, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("blocks", [1, 2])
def test_the_accumulator_keeps_each_gaussians_heaviest_segments(blocks):
    """Two views folded in: per Gaussian the total and its 2 heaviest (segment, weight)
    pairs equal those of the per-view sums, found here by brute force."""
    from ovseg.fields.fast_raster import LiftAccumulator, project_fast

    cloud = _cloud(n=500, degree=0, seed=1)
    cameras = [
        _camera(),
        Camera(look_at((-2.5, -2.0, 1.2), (0, 0, 0)), 70.0, 70.0, 48.0, 36.0, 96, 72, "b"),
    ]
    covariances = covariance_3d(cloud.scales, cloud.quaternions).detach()
    opacities = cloud.opacities.detach()
    rng = np.random.default_rng(0)
    accumulator = LiftAccumulator(500, 2, blocks=blocks)
    expected: dict[int, dict[int, float]] = {}
    offset = 0
    for camera in cameras:
        segments = np.repeat(rng.integers(-1, 3, size=(camera.height // 8, 1)), 8, 0)
        segments = np.repeat(segments, camera.width, 1)  # bands of rows, one segment each
        projection = project_fast(cloud.means.detach(), covariances, camera)
        found = render_fast(
            projection, opacities, None, camera.width, camera.height, segments=segments, blocks=1
        )["segment_weights"]
        for g, s, w in zip(found.gaussians, found.segments, found.weights, strict=True):
            expected.setdefault(int(g), {})[offset + int(s)] = float(w)
        accumulator.add_view(projection, opacities, segments, offset, camera.width, camera.height)
        offset += 3
    assert accumulator.dropped == 0
    assert len(expected) > 100
    for g in range(500):
        pairs = expected.get(g, {})
        assert accumulator.total[g] == pytest.approx(sum(pairs.values()), rel=1e-5, abs=1e-7)
        heaviest = sorted(pairs.items(), key=lambda p: -p[1])[:2]
        held = zip(accumulator.segments[g], accumulator.weights[g], strict=True)
        kept = {int(s): float(w) for s, w in held if s >= 0}
        assert set(kept) == {s for s, _ in heaviest}, g
        for s, w in heaviest:
            assert kept[s] == pytest.approx(w, rel=1e-5)
