"""Fitting Gaussians to posed views: colours and geometry first (3D Gaussian Splatting's
recipe, shortened for CPUs), then the language latents with the geometry frozen (LangSplat).

Both loops save a checkpoint every ``checkpoint_every`` iterations (parameters, optimizer
state, iteration, densification statistics) and, given the same checkpoint path, go on from
it: a stopped fit resumes where it was and ends where an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.checkpoint import load_state
from ovseg.fields.camera import Camera
from ovseg.fields.deform import DeformationField, SpacetimeCloud, StatusField, deform, split_in_time
from ovseg.fields.gaussians import GaussianCloud
from ovseg.fields.rasterizer import render
from ovseg.fileio import atomic_write

PARAMETERS = GaussianCloud.parameter_names  # a static cloud's tensors


@dataclass
class FitConfig:
    """The RGB fit. Learning rates are 3DGS's (means' scaled by the scene extent and decayed
    exponentially to 1/100); densification every ``densify_every`` iterations in
    [densify_from, densify_until): Gaussians whose mean screen-space gradient (in NDC units,
    as 3DGS measures it) exceeds ``densify_grad`` are cloned when small (max scale <=
    ``percent_dense`` x extent) and split in two when large; those with opacity under
    ``prune_opacity`` or larger than ``prune_scale`` x extent are removed."""

    iterations: int = 600
    ssim_weight: float = 0.2  # loss = (1 - w) L1 + w (1 - SSIM), 3DGS's lambda
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_sh: float = 2.5e-3
    lr_opacity: float = 0.05
    lr_scales: float = 5e-3
    lr_quaternions: float = 1e-3
    densify_from: int = 100
    densify_until: int = 400
    densify_every: int = 100
    densify_grad: float = 2e-4
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    prune_scale: float = 0.1
    max_gaussians: int = 60_000
    checkpoint_every: int = 100
    seed: int = 0


def colour_config(iterations: int) -> FitConfig:
    """The colour fit for ``iterations``: densification over its first two thirds."""
    densify_until = max(1, int(iterations * 2 / 3))
    return FitConfig(
        iterations=iterations, densify_until=densify_until, densify_from=min(100, densify_until)
    )


@dataclass
class LatentFitConfig:
    """The language-latent fit: L1 between the rendered latent and the view's encoded
    feature map over pixels that have one (LangSplat; its learning rate 2.5e-3)."""

    iterations: int = 300
    lr: float = 2.5e-3
    checkpoint_every: int = 100
    seed: int = 0


def language_iterations(train_views: int, *, visits: int = 11, minimum: int = 300) -> int:
    """Language-fit iterations (one view each) that visit each of ``train_views`` views about
    ``visits`` times, rounded up to a hundred, at least ``minimum``: 300 for the 3D world's
    24 views, 1,000 for the 4D bench's 90 frames (its time-agnostic mIoU rose from 18.3 to
    31.8 going from 300 to 1,000, README)."""
    if train_views < 1:
        raise ValueError(f"language_iterations: need >= 1 training view, got {train_views}")
    return max(minimum, 100 * math.ceil(visits * train_views / 100))


@dataclass
class DeformationFitConfig:
    """The deformation network's part of a dynamic RGB fit (Deformable 3D Gaussians' recipe:
    the canonical Gaussians alone for ``warm_up`` iterations, then the network too, its
    learning rate x extent decayed exponentially from ``lr`` to ``lr_final``). For a
    :class:`~ovseg.fields.deform.SpacetimeCloud`, the learning rates of its temporal centres
    (normalised time), temporal log-scales and velocities (x extent), and the temporal
    scale above which a Gaussian chosen for densification is split in time
    (:func:`~ovseg.fields.deform.split_in_time`) instead of in space; Gaussians that would
    never be seen in [0, 1] (3 temporal scales away) are pruned."""

    warm_up: int = 150
    lr: float = 8e-4
    lr_final: float = 1.6e-6
    lr_time_centres: float = 1e-3
    lr_time_scales: float = 1e-2
    lr_velocities: float = 1e-3
    time_split_scale: float = 0.1


@dataclass
class View:
    """A training view: its camera, target image (H, W, 3) float in [0, 1], and for a
    dynamic scene its time normalised to [0, 1]."""

    camera: Camera
    image: torch.Tensor
    time: float | None = None


def scene_extent(cameras: list[Camera]) -> float:
    """3DGS's "cameras extent": 1.1 x the largest distance of a camera centre from their
    mean (world units)."""
    centres = torch.stack([c.centre for c in cameras])
    return 1.1 * float((centres - centres.mean(0)).norm(dim=1).max().clamp_min(1e-6))


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of two (H, W, C) images in [0, 1] with a Gaussian window
    (11 px, sigma 1.5, zero padding, C1 = 0.01^2, C2 = 0.03^2: 3DGS's ``ssim``)."""
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    channels = x.shape[1]
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window, window)

    def blur(t):
        return F.conv2d(t, kernel, padding=window // 2, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return value.mean()


def _optimizer(
    cloud: GaussianCloud, cfg: FitConfig, extent: float, dynamic: DeformationFitConfig | None = None
) -> torch.optim.Adam:
    groups = [
        {"params": [cloud.means], "lr": cfg.lr_means * extent, "name": "means"},
        {"params": [cloud.sh], "lr": cfg.lr_sh, "name": "sh"},
        {"params": [cloud.opacity_logits], "lr": cfg.lr_opacity, "name": "opacity_logits"},
        {"params": [cloud.log_scales], "lr": cfg.lr_scales, "name": "log_scales"},
        {"params": [cloud.quaternions], "lr": cfg.lr_quaternions, "name": "quaternions"},
    ]
    if isinstance(cloud, SpacetimeCloud):
        dynamic = dynamic or DeformationFitConfig()
        groups += [
            {"params": [cloud.time_centres], "lr": dynamic.lr_time_centres, "name": "time"},
            {"params": [cloud.time_log_scales], "lr": dynamic.lr_time_scales, "name": "span"},
            {"params": [cloud.velocities], "lr": dynamic.lr_velocities * extent, "name": "v"},
        ]
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15)


def _means_lr(cfg: FitConfig, extent: float, iteration: int) -> float:
    return _exponential(
        cfg.lr_means, cfg.lr_means_final, iteration / max(cfg.iterations, 1), extent
    )


def _exponential(start: float, end: float, fraction: float, scale: float) -> float:
    t = min(1.0, max(0.0, fraction))
    return scale * math.exp((1 - t) * math.log(start) + t * math.log(end))


def fit_rgb(
    cloud: GaussianCloud,
    views: list[View],
    cfg: FitConfig,
    *,
    checkpoint: str | Path | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    deformation: DeformationField | None = None,
    deformation_cfg: DeformationFitConfig | None = None,
) -> dict:
    """Fit ``cloud``'s geometry and colours to ``views`` (one random view per iteration).

    ``checkpoint``: a file to save to and resume from; ``max_steps``: stop after this many
    iterations in this call (a later call with the same checkpoint goes on).
    ``deformation``: for a dynamic scene (every view has a time), the network that moves the
    canonical ``cloud`` over time, fitted with it (``deformation_cfg``, default
    :class:`DeformationFitConfig`).
    A :class:`~ovseg.fields.deform.SpacetimeCloud` (dynamic scenes too) also fits its
    temporal opacity and velocities, with or without a deformation network.
    Returns {"loss": mean loss of the last 50 iterations, "gaussians": final count,
    "iteration": where it stopped}."""
    from tqdm import tqdm

    if not views:
        raise ValueError("fit_rgb: no training views")
    cfg_dict = asdict(cfg)
    spacetime = isinstance(cloud, SpacetimeCloud)
    if deformation is not None or spacetime:
        deformation_cfg = deformation_cfg or DeformationFitConfig()
        cfg_dict["deformation"] = asdict(deformation_cfg)
        if any(v.time is None for v in views):
            raise ValueError("fit_rgb: a dynamic fit needs a time on every view")
    if deformation is not None:
        deformation_optimizer = torch.optim.Adam(deformation.parameters(), lr=0.0, eps=1e-15)
    extent = scene_extent([v.camera for v in views])
    generator = torch.Generator().manual_seed(cfg.seed)
    order = torch.randint(len(views), (cfg.iterations,), generator=generator)
    state = _load_checkpoint(checkpoint, cloud, cfg_dict=cfg_dict)
    start = state.get("iteration", 0)
    optimizer = _optimizer(cloud, cfg, extent, deformation_cfg)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if deformation is not None and "deformation" in state:
        load_state(
            deformation,
            state["deformation"],
            source=f"the deformation network of {checkpoint}",
            hint="delete it to start over",
        )
        deformation_optimizer.load_state_dict(state["deformation_optimizer"])
    grad_sum = state.get("grad_sum", torch.zeros(len(cloud)))
    grad_count = state.get("grad_count", torch.zeros(len(cloud)))
    losses: list[float] = list(state.get("losses", []))
    end = cfg.iterations if max_steps is None else min(cfg.iterations, start + max_steps)
    bar = tqdm(
        range(start, end),
        desc="fit colours",
        disable=not progress,
        initial=start,
        total=cfg.iterations,
    )
    for iteration in bar:
        optimizer.param_groups[0]["lr"] = _means_lr(cfg, extent, iteration)
        view = views[int(order[iteration])]
        subject = cloud
        deforming = deformation is not None and iteration >= deformation_cfg.warm_up
        if deforming:
            fraction = (iteration - deformation_cfg.warm_up) / max(
                cfg.iterations - deformation_cfg.warm_up, 1
            )
            lr = _exponential(deformation_cfg.lr, deformation_cfg.lr_final, fraction, extent)
            for group in deformation_optimizer.param_groups:
                group["lr"] = lr
            subject = deform(cloud, deformation, view.time)
        elif spacetime:
            subject = deform(cloud, None, view.time)
        out = render(subject, view.camera, background=torch.zeros(3))
        means2d = out["projection"].means2d
        means2d.retain_grad()
        image = out["features"]
        loss = (1 - cfg.ssim_weight) * (image - view.image).abs().mean() + cfg.ssim_weight * (
            1 - ssim(image, view.image)
        )
        optimizer.zero_grad(set_to_none=True)
        if deformation is not None:
            deformation_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if deforming:
            deformation_optimizer.step()
        losses.append(loss.detach().item())
        with torch.no_grad():
            visible = out["projection"].visible
            camera = view.camera
            # pixel gradients -> NDC units, as 3DGS's threshold is stated in
            ndc = means2d.grad * torch.tensor([camera.width / 2, camera.height / 2])
            grad_sum[visible] += ndc[visible].norm(dim=1)
            grad_count[visible] += 1
            step = iteration + 1
            if cfg.densify_from <= step < cfg.densify_until and step % cfg.densify_every == 0:
                # seeded by the step, so a resumed fit splits like an uninterrupted one
                noise = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                _densify_and_prune(
                    cloud, grad_sum / grad_count.clamp_min(1), cfg, extent, noise, deformation_cfg
                )
                optimizer = _optimizer(cloud, cfg, extent, deformation_cfg)
                grad_sum = torch.zeros(len(cloud))
                grad_count = torch.zeros(len(cloud))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", gaussians=len(cloud))
        if checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == end):
            extra = (
                {}
                if deformation is None
                else {
                    "deformation": deformation.state_dict(),
                    "deformation_optimizer": deformation_optimizer.state_dict(),
                }
            )
            _save_checkpoint(
                checkpoint,
                cloud,
                cfg_dict,
                step,
                optimizer,
                losses,
                grad_sum=grad_sum,
                grad_count=grad_count,
                **extra,
            )
    return {
        "loss": float(np.mean(losses[-50:])) if losses else float("nan"),
        "gaussians": len(cloud),
        "iteration": end,
    }


def _densify_and_prune(cloud, mean_grad, cfg, extent, generator, dynamic=None) -> None:
    max_scale = cloud.scales.max(dim=1).values
    wanted = mean_grad > cfg.densify_grad
    room = cfg.max_gaussians - len(cloud)
    if room <= 0:
        wanted[:] = False
    elif int(wanted.sum()) > room:  # keep the largest gradients within the cap
        threshold = mean_grad[wanted].topk(room).values.min()
        wanted &= mean_grad >= threshold
    params = {name: getattr(cloud, name).detach() for name in cloud.parameter_names}
    in_time = torch.zeros_like(wanted)
    if isinstance(cloud, SpacetimeCloud):  # long-lived ones split in time first
        dynamic = dynamic or DeformationFitConfig()
        in_time = wanted & (params["time_log_scales"].exp() > dynamic.time_split_scale)
        wanted &= ~in_time
    clone = wanted & (max_scale <= cfg.percent_dense * extent)
    split = wanted & ~clone
    new = {name: value[clone] for name, value in params.items()}
    if bool(in_time.any()):
        children = split_in_time({name: value[in_time] for name, value in params.items()})
        for name in cloud.parameter_names:
            new[name] = torch.cat([new[name], children[name]])
    if bool(split.any()):
        from ovseg.fields.gaussians import quaternion_to_rotation

        scales = cloud.scales.detach()[split].repeat(2, 1)
        rotation = quaternion_to_rotation(params["quaternions"][split]).repeat(2, 1, 1)
        noise = torch.randn(scales.shape, generator=generator) * scales
        samples = params["means"][split].repeat(2, 1) + (rotation @ noise[..., None])[..., 0]
        children = {
            name: value[split].repeat(2, *[1] * (value.dim() - 1)) for name, value in params.items()
        }
        children["means"] = samples
        children["log_scales"] = (scales / 1.6).log()
        for name in cloud.parameter_names:
            new[name] = torch.cat([new[name], children[name]])
    keep = ~split & ~in_time
    keep &= cloud.opacities.detach() >= cfg.prune_opacity
    keep &= max_scale <= cfg.prune_scale * extent
    if isinstance(cloud, SpacetimeCloud):  # never seen within the video
        reach = 3 * params["time_log_scales"].exp()
        centres = params["time_centres"]
        keep &= (centres + reach >= 0) & (centres - reach <= 1)
    cloud.keep(keep)
    cloud.append(new)


def fit_latents(
    cloud: GaussianCloud,
    cameras: list[Camera],
    targets: list[torch.Tensor],
    valid: list[torch.Tensor],
    cfg: LatentFitConfig,
    *,
    checkpoint: str | Path | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    times: list[float] | None = None,
    deformation: DeformationField | None = None,
    status: StatusField | None = None,
) -> dict:
    """Fit ``cloud.latents`` (geometry and colours frozen) so each view renders its target
    latent map: targets[i] (H, W, L), valid[i] (H, W) or (H, W, L) bool (where a pixel has a
    feature: per pixel, or per pixel and channel when mask levels cover different pixels).

    Dynamic scenes: with ``times`` (one per view, normalised to [0, 1]) the geometry is
    ``deformation``'s at each view's time (frozen too); with ``status`` the fitted latents are
    that :class:`StatusField`'s time-sensitive features (its prototypes and weights network
    are what is fitted), not ``cloud.latents``."""
    from tqdm import tqdm

    if not cameras:
        raise ValueError("fit_latents: no views")
    if times is None and (deformation is not None or status is not None):
        raise ValueError("fit_latents: a deformation or status field needs the views' times")
    generator = torch.Generator().manual_seed(cfg.seed)
    order = torch.randint(len(cameras), (cfg.iterations,), generator=generator)
    state = _load_checkpoint(checkpoint, cloud, cfg_dict=asdict(cfg))
    start = state.get("iteration", 0)
    for name in cloud.parameter_names:
        getattr(cloud, name).requires_grad_(name == "latents" and status is None)
    frozen = [] if deformation is None else list(deformation.parameters())
    for parameter in frozen:
        parameter.requires_grad_(False)
    fitted = [cloud.latents] if status is None else list(status.parameters())
    if status is not None and "status" in state:
        load_state(
            status,
            state["status"],
            source=f"the status field of {checkpoint}",
            hint="delete it to start over",
        )
    optimizer = torch.optim.Adam(fitted, lr=cfg.lr, eps=1e-15)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    losses: list[float] = list(state.get("losses", []))
    end = cfg.iterations if max_steps is None else min(cfg.iterations, start + max_steps)
    bar = tqdm(
        range(start, end),
        desc="fit language",
        disable=not progress,
        initial=start,
        total=cfg.iterations,
    )
    for iteration in bar:
        index = int(order[iteration])
        subject = cloud
        if times is not None:
            latents = None if status is None else status(cloud.means.detach(), times[index])
            subject = deform(cloud, deformation, times[index], latents=latents)
        out = render(subject, cameras[index], what="latent")
        mask = valid[index]
        if mask.dim() == 2:  # one mask for every channel
            mask = mask[..., None].expand_as(targets[index])
        loss = (out["features"][mask] - targets[index][mask]).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        step = iteration + 1
        if checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == end):
            extra = {} if status is None else {"status": status.state_dict()}
            _save_checkpoint(checkpoint, cloud, asdict(cfg), step, optimizer, losses, **extra)
    for name in cloud.parameter_names:
        getattr(cloud, name).requires_grad_(True)
    for parameter in frozen:
        parameter.requires_grad_(True)
    return {"loss": float(np.mean(losses[-50:])) if losses else float("nan"), "iteration": end}


def _save_checkpoint(path, cloud, cfg_dict, iteration, optimizer, losses, **extra) -> None:
    state = {
        "config": cfg_dict,
        "iteration": iteration,
        "gaussians": {
            name: getattr(cloud, name).detach().clone() for name in cloud.parameter_names
        },
        "optimizer": optimizer.state_dict(),
        "losses": losses,
        **extra,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path, cloud, *, cfg_dict: dict) -> dict:
    """The saved state (its Gaussians copied into ``cloud``), or {} with no checkpoint.
    ValueError when the checkpoint was made with another configuration."""
    if path is None or not Path(path).is_file():
        return {}
    from ovseg.checkpoint import check_tensor_names, read_torch_file

    again = "delete it to start over"
    state = read_torch_file(path, hint=again)
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"{path} is not a fit checkpoint of ovseg: {again}")
    if state["config"] != cfg_dict:
        changed = sorted(k for k in cfg_dict if state["config"].get(k) != cfg_dict[k])
        raise ValueError(
            f"{path} was saved with other settings ({', '.join(changed)}); delete it to start "
            "over or use the same settings to resume"
        )
    names = dict.fromkeys(cloud.parameter_names)
    check_tensor_names(state["gaussians"], names, source=f"the Gaussians of {path}", hint=again)
    cloud.keep(torch.zeros(len(cloud), dtype=torch.bool))
    cloud.append(state["gaussians"])
    return state
