"""Deformable Gaussians for dynamic scenes: a canonical :class:`GaussianCloud` and a small
network that moves, turns and scales each Gaussian over time.

The deformation follows Deformable 3D Gaussians (Yang et al., CVPR 2024) and 4DGS (Wu et al.,
CVPR 2024) without their CUDA parts: an MLP of the sinusoidal encodings of the canonical mean
and the time gives offsets (dx, dq, ds) that are added to the mean, the quaternion and the
log-scale (both papers add the rotation offset to the quaternion, which is normalised when the
covariance is built). Objects here also change colour and shape over time, which moving
Gaussians alone cannot show, so the network also offsets the base colour (the degree-0 SH
coefficients) and the opacity logit. Its last layer starts at zero, so before training the
scene is the canonical one at every time. The time-agnostic language latent stays with the
canonical Gaussian: an object keeps its identity while it moves.

A network that moves existing Gaussians cannot make an object appear, vanish or turn into
another shape (a ring closing into a circle, a star that turns red): those need Gaussians
that live for part of the video. :class:`SpacetimeCloud` gives each Gaussian a temporal
centre and scale and a velocity (Spacetime Gaussians, Li et al., CVPR 2024: temporal radial
basis opacity and polynomial motion, here of degree 1); the deformation network adds its
smooth offsets on top. Densification splits a Gaussian in time as well as in space
(:func:`split_in_time`), so each half can specialise to one state.

The status network of 4D LangSplat (Li et al., CVPR 2025) gives each Gaussian a
time-sensitive language feature: a softmax mixture, over time, of a few learned state
prototypes per Gaussian (:class:`StatusField`), so a feature moves between a small number of
states smoothly instead of drifting freely.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ovseg.fields.gaussians import GaussianCloud, view_colours


def sinusoidal_encoding(values: torch.Tensor, frequencies: int) -> torch.Tensor:
    """NeRF's positional encoding: (N, C) -> (N, C * (1 + 2 * frequencies)) with
    [x, sin(2^k pi x), cos(2^k pi x)] for k < frequencies."""
    parts = [values]
    for k in range(frequencies):
        scaled = (2.0**k) * math.pi * values
        parts += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(parts, dim=1)


def _mlp(inputs: int, width: int, depth: int, outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    size = inputs
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU(inplace=True)]
        size = width
    last = nn.Linear(size, outputs)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class SpaceTimeEncoding(nn.Module):
    """(canonical means (N, 3), a time in [0, 1]) -> (N, dim) sinusoidal encodings; means are
    encoded as (x - centre) / extent, so the frequencies fit a scene of any size."""

    def __init__(self, centre, extent: float, position_frequencies: int, time_frequencies: int):
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32).reshape(3))
        self.register_buffer("extent", torch.tensor(float(extent)))
        self.position_frequencies, self.time_frequencies = position_frequencies, time_frequencies
        self.dim = 3 * (1 + 2 * position_frequencies) + (1 + 2 * time_frequencies)

    def forward(self, means: torch.Tensor, time: float) -> torch.Tensor:
        positions = (means - self.centre) / self.extent
        times = torch.full((means.shape[0], 1), float(time), dtype=means.dtype, device=means.device)
        return torch.cat(
            [
                sinusoidal_encoding(positions, self.position_frequencies),
                sinusoidal_encoding(times, self.time_frequencies),
            ],
            dim=1,
        )


class DeformationField(nn.Module):
    """(canonical mean, time) -> offsets of mean, quaternion, log-scale, colour and opacity.

    Args:
        centre (3,), extent: the scene's centre and radius (world units), for the encoding.
        position_frequencies, time_frequencies: encoding frequencies (Deformable 3D Gaussians
            uses 10 and 6 on large scenes; small scenes need fewer).
        width, depth: the MLP's hidden width and number of hidden layers.
    Times given to :meth:`forward` are normalised to [0, 1] by the caller.
    """

    def __init__(
        self,
        centre: torch.Tensor,
        extent: float,
        *,
        position_frequencies: int = 4,
        time_frequencies: int = 4,
        width: int = 64,
        depth: int = 3,
    ) -> None:
        super().__init__()
        self.encoding = SpaceTimeEncoding(centre, extent, position_frequencies, time_frequencies)
        self.net = _mlp(self.encoding.dim, width, depth, 3 + 4 + 3 + 3 + 1)

    def forward(self, means: torch.Tensor, time: float) -> tuple[torch.Tensor, ...]:
        """Offsets at ``time``: d_means (N, 3) world units, d_quaternions (N, 4),
        d_log_scales (N, 3), d_colour (N, 3) added to the degree-0 SH coefficients,
        d_opacity (N,) added to the opacity logits."""
        out = self.net(self.encoding(means, time))
        return (
            out[:, :3] * self.encoding.extent,
            out[:, 3:7],
            out[:, 7:10],
            out[:, 10:13],
            out[:, 13],
        )


class SpacetimeCloud(GaussianCloud):
    """Gaussians with a life in time (Spacetime Gaussians, Li et al., CVPR 2024, eq. 3-4 with
    a degree-1 motion): Gaussian i at normalised time t has the mean ``mu_i + v_i (t - c_i)``
    and the opacity ``sigmoid(o_i) * exp(-((t - c_i) / s_i)^2 / 2)``.

    Extra parameters: time_centres c (N,) in normalised time, time_log_scales log s (N,),
    velocities v (N, 3) in world units per unit of normalised time. Build with
    :meth:`from_cloud`."""

    parameter_names = GaussianCloud.parameter_names + (
        "time_centres",
        "time_log_scales",
        "velocities",
    )

    def __init__(
        self,
        means,
        log_scales,
        quaternions,
        opacity_logits,
        sh,
        latents=None,
        time_centres=None,
        time_log_scales=None,
        velocities=None,
    ) -> None:
        super().__init__(means, log_scales, quaternions, opacity_logits, sh, latents)
        n = len(self)
        time_centres = torch.full((n,), 0.5) if time_centres is None else time_centres
        time_log_scales = torch.zeros(n) if time_log_scales is None else time_log_scales
        velocities = torch.zeros(n, 3) if velocities is None else velocities
        for name, value, shape in (
            ("time_centres", time_centres, (n,)),
            ("time_log_scales", time_log_scales, (n,)),
            ("velocities", velocities, (n, 3)),
        ):
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"SpacetimeCloud: {name} must be {shape}, got {tuple(value.shape)}"
                )
            setattr(self, name, nn.Parameter(value.float().clone()))

    @classmethod
    def from_cloud(cls, cloud: GaussianCloud, *, slices: int = 1) -> SpacetimeCloud:
        """``cloud`` copied ``slices`` times, copy k living around time (k + 0.5) / slices with
        the temporal scale 1 / slices (one slice: centre 0.5, scale 1, visible throughout:
        opacity x 0.88 at both ends), at rest."""
        if slices < 1:
            raise ValueError(f"SpacetimeCloud.from_cloud: slices must be >= 1, got {slices}")
        n = len(cloud)
        tensors = []
        for name in GaussianCloud.parameter_names:
            value = getattr(cloud, name).detach()
            tensors.append(value.repeat(slices, *[1] * (value.dim() - 1)))
        centres = ((torch.arange(slices) + 0.5) / slices).repeat_interleave(n)
        log_scales = torch.full((n * slices,), math.log(1.0 / slices))
        return cls(*tensors, centres, log_scales, torch.zeros(n * slices, 3))

    def temporal_opacity(self, time: float) -> torch.Tensor:
        """(N,) the factor in (0, 1] of each Gaussian's opacity at ``time``."""
        z = (time - self.time_centres) / self.time_log_scales.exp()
        return torch.exp(-0.5 * z * z)


def split_in_time(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two children per Gaussian of ``params`` (a :class:`SpacetimeCloud`'s tensors): the
    same in space, one centred half a temporal scale before the parent and one after, each
    with half its temporal scale (their opacities sum to about the parent's)."""
    children = {name: value.repeat(2, *[1] * (value.dim() - 1)) for name, value in params.items()}
    n = params["time_centres"].shape[0]
    half = params["time_log_scales"].exp() / 2
    sign = torch.cat([-torch.ones(n), torch.ones(n)])
    children["time_centres"] = params["time_centres"].repeat(2) + sign * half.repeat(2)
    children["time_log_scales"] = (half.log()).repeat(2)
    return children


class StatusField(nn.Module):
    """4D LangSplat's status-deformable features: Gaussian i's time-sensitive feature at time
    t is sum_k w_ik(t) p_ik, with K learned prototypes p_i (N, K, C) per Gaussian and weights
    w_i(t) = softmax(MLP(enc(x_i, t))) over k.

    Args:
        count: N Gaussians; states: K prototypes each; channels: C (the latent's size);
        centre, extent: as :class:`DeformationField`.
    """

    def __init__(
        self,
        count: int,
        centre: torch.Tensor,
        extent: float,
        *,
        states: int = 3,
        channels: int = 3,
        position_frequencies: int = 4,
        time_frequencies: int = 4,
        width: int = 64,
        depth: int = 2,
    ) -> None:
        super().__init__()
        self.encoding = SpaceTimeEncoding(centre, extent, position_frequencies, time_frequencies)
        self.weights_net = _mlp(self.encoding.dim, width, depth, states)
        nn.init.normal_(self.weights_net[-1].weight, std=0.1)  # states distinguishable at start
        self.prototypes = nn.Parameter(torch.randn(count, states, channels) * 0.1)

    def state_weights(self, means: torch.Tensor, time: float) -> torch.Tensor:
        """(N, K) the mixture weights at ``time`` (rows sum to 1)."""
        return torch.softmax(self.weights_net(self.encoding(means, time)), dim=1)

    def forward(self, means: torch.Tensor, time: float) -> torch.Tensor:
        """(N, C) time-sensitive features at ``time`` for the canonical ``means`` (N, 3)."""
        return (self.state_weights(means, time)[..., None] * self.prototypes).sum(dim=1)


class DeformedCloud:
    """The Gaussians of a canonical cloud at one time: what :func:`~ovseg.fields.rasterizer.
    render` reads of a cloud (means, scales, quaternions, opacities, colours, latents).
    ``opacity_factor`` (N,) scales the opacities (a :class:`SpacetimeCloud`'s temporal
    opacity)."""

    def __init__(
        self, means, quaternions, log_scales, opacity_logits, sh, latents, opacity_factor=None
    ) -> None:
        self.means, self.quaternions, self.log_scales = means, quaternions, log_scales
        self.opacity_logits, self.sh, self.latents = opacity_logits, sh, latents
        self.opacity_factor = opacity_factor

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> torch.Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        opacities = torch.sigmoid(self.opacity_logits)
        return opacities if self.opacity_factor is None else opacities * self.opacity_factor

    def colours(self, camera_centre: torch.Tensor) -> torch.Tensor:
        return view_colours(self.sh, self.means, camera_centre)


def deform(
    cloud: GaussianCloud,
    deformation: DeformationField | None,
    time: float,
    *,
    latents: torch.Tensor | None = None,
) -> DeformedCloud:
    """``cloud`` at ``time`` (normalised to [0, 1]); ``latents`` (N, L) replaces the cloud's
    own latents in the result (a time-sensitive feature, or both concatenated). Without a
    deformation the geometry is the canonical one; a :class:`SpacetimeCloud` also moves
    with its velocities and fades with its temporal opacity."""
    means, quaternions, log_scales = cloud.means, cloud.quaternions, cloud.log_scales
    opacity_logits, sh, factor = cloud.opacity_logits, cloud.sh, None
    if isinstance(cloud, SpacetimeCloud):
        means = means + cloud.velocities * (time - cloud.time_centres)[:, None]
        factor = cloud.temporal_opacity(time)
    if deformation is not None:
        d_means, d_quaternions, d_log_scales, d_colour, d_opacity = deformation(cloud.means, time)
        means, quaternions = means + d_means, quaternions + d_quaternions
        log_scales, opacity_logits = log_scales + d_log_scales, opacity_logits + d_opacity
        sh = torch.cat([sh[:, :1] + d_colour[:, None], sh[:, 1:]], dim=1)
    return DeformedCloud(
        means,
        quaternions,
        log_scales,
        opacity_logits,
        sh,
        cloud.latents if latents is None else latents,
        factor,
    )
