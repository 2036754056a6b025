"""3D Gaussians as learnable parameters (3D Gaussian Splatting, Kerbl et al. 2023), with a
language latent per Gaussian (LangSplat, Qin et al. 2024).

Parameterisation (the 3DGS code's): means (N, 3) in world units; log-scales (N, 3) so the
standard deviations are ``exp(log_scales)``; unit quaternions (N, 4) as (w, x, y, z),
normalised on use; opacity logits (N,) so opacity is ``sigmoid``; colour as spherical
harmonics coefficients (N, (degree + 1)^2, 3), degree 0 to 3, with 3DGS's
``rgb = SH_C0 * dc + 0.5`` offset;
a language latent (N, L) rendered like a colour (LangSplat's 3 channels by default).
"""

from __future__ import annotations

import torch
from torch import nn

SH_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi)), the degree-0 real SH basis
SH_C1 = 0.4886025119029199  # sqrt(3 / (4 pi)), the degree-1 basis


def quaternion_to_rotation(quaternions: torch.Tensor) -> torch.Tensor:
    """(N, 4) quaternions (w, x, y, z), any norm > 0 -> (N, 3, 3) rotation matrices."""
    q = quaternions / quaternions.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def covariance_3d(scales: torch.Tensor, quaternions: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T (3DGS eq. 6): scales (N, 3) standard deviations, quaternions (N, 4)
    -> (N, 3, 3) symmetric positive semi-definite covariances."""
    rs = quaternion_to_rotation(quaternions) * scales[:, None, :]
    return rs @ rs.transpose(1, 2)


# the real SH basis' constants of degrees 2 and 3, as 3DGS's sh_utils writes them
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
SH_COEFFICIENTS = (1, 4, 9, 16)  # per channel, for degrees 0-3


def sh_to_rgb(sh: torch.Tensor, directions: torch.Tensor | None = None) -> torch.Tensor:
    """View-dependent colour from SH coefficients (3DGS's ``eval_sh``, degrees 0 to 3).

    Args:
        sh: (N, K, 3) coefficients, K = 1, 4, 9 or 16 (degree 0, 1, 2 or 3).
        directions: (N, 3) unit vectors from the camera centre to each Gaussian; needed from
            degree 1 on.
    Returns: (N, 3) colours, clamped at 0 from below (3DGS clamps the same way).
    Raises: ValueError for another K, or degree >= 1 without directions.
    """
    if sh.shape[1] not in SH_COEFFICIENTS:
        raise ValueError(
            f"sh_to_rgb: expected 1, 4, 9 or 16 coefficients per channel, got {sh.shape[1]}"
        )
    rgb = SH_C0 * sh[:, 0]
    if sh.shape[1] >= 4:
        if directions is None:
            raise ValueError("sh_to_rgb: degree-1 coefficients need view directions")
        x, y, z = directions[:, 0:1], directions[:, 1:2], directions[:, 2:3]
        rgb = rgb - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
        if sh.shape[1] >= 9:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            rgb = (
                rgb
                + SH_C2[0] * xy * sh[:, 4]
                + SH_C2[1] * yz * sh[:, 5]
                + SH_C2[2] * (2 * zz - xx - yy) * sh[:, 6]
                + SH_C2[3] * xz * sh[:, 7]
                + SH_C2[4] * (xx - yy) * sh[:, 8]
            )
            if sh.shape[1] == 16:
                rgb = (
                    rgb
                    + SH_C3[0] * y * (3 * xx - yy) * sh[:, 9]
                    + SH_C3[1] * xy * z * sh[:, 10]
                    + SH_C3[2] * y * (4 * zz - xx - yy) * sh[:, 11]
                    + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12]
                    + SH_C3[4] * x * (4 * zz - xx - yy) * sh[:, 13]
                    + SH_C3[5] * z * (xx - yy) * sh[:, 14]
                    + SH_C3[6] * x * (xx - 3 * yy) * sh[:, 15]
                )
    return (rgb + 0.5).clamp_min(0.0)


def view_colours(
    sh: torch.Tensor, means: torch.Tensor, camera_centre: torch.Tensor
) -> torch.Tensor:
    """(N, 3) colours of Gaussians at ``means`` (N, 3) with coefficients ``sh`` seen from
    ``camera_centre`` (3,) (the view direction matters from degree 1 on)."""
    directions = None
    if sh.shape[1] > 1:
        directions = means - camera_centre.to(means)
        directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return sh_to_rgb(sh, directions)


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3) colours in [0, 1] -> (N, 1, 3) degree-0 coefficients that render them."""
    return ((rgb - 0.5) / SH_C0)[:, None, :]


class GaussianCloud(nn.Module):
    """N Gaussians with colour and a language latent, all parameters learnable.

    Build with :meth:`from_points` (initialisation of 3DGS: isotropic scale from the mean
    distance to the 3 nearest neighbours, opacity 0.1, identity rotation).
    """

    # the per-Gaussian tensors, in the constructor's order (fits, densification, files)
    parameter_names: tuple[str, ...] = (
        "means",
        "log_scales",
        "quaternions",
        "opacity_logits",
        "sh",
        "latents",
    )

    def __init__(
        self,
        means: torch.Tensor,
        log_scales: torch.Tensor,
        quaternions: torch.Tensor,
        opacity_logits: torch.Tensor,
        sh: torch.Tensor,
        latents: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        n = means.shape[0]
        for name, value, shape in (
            ("means", means, (n, 3)),
            ("log_scales", log_scales, (n, 3)),
            ("quaternions", quaternions, (n, 4)),
            ("opacity_logits", opacity_logits, (n,)),
        ):
            if tuple(value.shape) != shape:
                raise ValueError(f"GaussianCloud: {name} must be {shape}, got {tuple(value.shape)}")
        if (
            sh.ndim != 3
            or sh.shape[0] != n
            or sh.shape[1] not in SH_COEFFICIENTS
            or sh.shape[2] != 3
        ):
            raise ValueError(
                f"GaussianCloud: sh must be ({n}, 1, 4, 9 or 16, 3), got {tuple(sh.shape)}"
            )
        if latents is None:
            latents = torch.zeros(n, 0)
        if latents.ndim != 2 or latents.shape[0] != n:
            raise ValueError(f"GaussianCloud: latents must be ({n}, L), got {tuple(latents.shape)}")
        self.means = nn.Parameter(means.float().clone())
        self.log_scales = nn.Parameter(log_scales.float().clone())
        self.quaternions = nn.Parameter(quaternions.float().clone())
        self.opacity_logits = nn.Parameter(opacity_logits.float().clone())
        self.sh = nn.Parameter(sh.float().clone())
        self.latents = nn.Parameter(latents.float().clone())

    @classmethod
    def from_points(
        cls,
        points: torch.Tensor,
        colours: torch.Tensor,
        *,
        sh_degree: int = 0,
        latent_dim: int = 0,
        opacity: float = 0.1,
    ) -> GaussianCloud:
        """Gaussians at ``points`` (N, 3) with ``colours`` (N, 3) in [0, 1]."""
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < 1:
            raise ValueError(f"from_points: points must be (N >= 1, 3), got {tuple(points.shape)}")
        if sh_degree not in (0, 1):
            raise ValueError(f"from_points: sh_degree must be 0 or 1, got {sh_degree}")
        points = points.float()
        n = points.shape[0]
        scale = _nearest_neighbour_distance(points, k=3).clamp_min(1e-7)
        sh = torch.zeros(n, (sh_degree + 1) ** 2, 3)
        sh[:, :1] = rgb_to_sh_dc(colours.float().clamp(0, 1))
        opacity_logit = torch.logit(torch.tensor(opacity)).item()
        return cls(
            points,
            scale.log()[:, None].expand(n, 3),
            torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4),
            torch.full((n,), opacity_logit),
            sh,
            torch.zeros(n, latent_dim),
        )

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return SH_COEFFICIENTS.index(self.sh.shape[1])

    @property
    def scales(self) -> torch.Tensor:
        """(N, 3) standard deviations along the Gaussians' axes."""
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        """(N,) opacities in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    def colours(self, camera_centre: torch.Tensor) -> torch.Tensor:
        """(N, 3) colours seen from ``camera_centre`` (3,)."""
        return view_colours(self.sh, self.means, camera_centre)

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the Gaussians where ``mask`` (N,) is True (new Parameters: rebuild the
        optimizer afterwards)."""
        for name in self.parameter_names:
            setattr(self, name, nn.Parameter(getattr(self, name).detach()[mask].clone()))

    def append(self, other: dict[str, torch.Tensor]) -> None:
        """Add Gaussians given as a dict of the :attr:`parameter_names` tensors
        (densification)."""
        for name in self.parameter_names:
            merged = torch.cat([getattr(self, name).detach(), other[name].to(self.means)])
            setattr(self, name, nn.Parameter(merged))


def _nearest_neighbour_distance(points: torch.Tensor, *, k: int, chunk: int = 1024) -> torch.Tensor:
    """(N,) root mean squared distance to the k nearest other points (3DGS's scale init)."""
    n = points.shape[0]
    if n == 1:
        return torch.ones(1)
    k = min(k, n - 1)
    out = torch.empty(n)
    for start in range(0, n, chunk):
        block = points[start : start + chunk]
        d2 = torch.cdist(block, points).square()
        d2[torch.arange(block.shape[0]), torch.arange(start, start + block.shape[0])] = float("inf")
        out[start : start + chunk] = d2.topk(k, dim=1, largest=False).values.mean(1).sqrt()
    return out
