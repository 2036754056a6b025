"""Pinhole cameras for the language fields, in one convention: OpenCV's.

A :class:`Camera` maps world points to pixels with ``x_cam = R @ x_world + t`` (its
``world_to_camera`` 4x4 holds R and t), camera axes x right, y down, z forward (into the
scene), and ``u = fx * x / z + cx``, ``v = fy * y / z + cy`` in continuous pixel coordinates
where pixel (row i, column j) covers [j, j + 1) x [i, i + 1), so its centre is (j + 0.5,
i + 0.5) - the convention of 3D Gaussian Splatting's and gsplat's rasterizers, of COLMAP's
PINHOLE model with the principal point at (W/2, H/2), and of nerfstudio's ``cx = W / 2``.

nerfstudio / Blender ``transforms.json`` store camera-to-world matrices in OpenGL's axes (x
right, y up, z backwards); :func:`camera_from_opengl` flips y and z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Camera:
    """One posed pinhole view.

    Attributes:
        world_to_camera: (4, 4) float tensor, [R t; 0 0 0 1] (OpenCV axes, world units).
        fx, fy: focal lengths in pixels; cx, cy: principal point in pixels (see module doc).
        width, height: image size in pixels.
        name: the view's name (its image file's stem in a scene), for messages and outputs.
    """

    world_to_camera: torch.Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    name: str = ""

    def __post_init__(self) -> None:
        w2c = torch.as_tensor(self.world_to_camera, dtype=torch.float64)
        if w2c.shape != (4, 4):
            raise ValueError(
                f"camera '{self.name}': world_to_camera must be 4x4, got {tuple(w2c.shape)}"
            )
        if not bool(torch.isfinite(w2c).all()):
            raise ValueError(
                f"camera '{self.name}': the pose has NaN or infinite values; fix or drop this view"
            )
        intrinsics = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in intrinsics) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(
                f"camera '{self.name}': focal lengths must be finite and > 0, got "
                f"fx={self.fx}, fy={self.fy} (cx={self.cx}, cy={self.cy})"
            )
        if self.width < 1 or self.height < 1:
            raise ValueError(
                f"camera '{self.name}': image size must be >= 1, got {self.width}x{self.height}"
            )
        rotation = w2c[:3, :3]
        if not torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=w2c.dtype), atol=1e-3):
            raise ValueError(
                f"camera '{self.name}': the pose's 3x3 block is not a rotation "
                "(scale or shear in the camera-to-world matrix?)"
            )
        self.world_to_camera = w2c.float()

    @property
    def rotation(self) -> torch.Tensor:
        """(3, 3) world-to-camera rotation R."""
        return self.world_to_camera[:3, :3]

    @property
    def translation(self) -> torch.Tensor:
        """(3,) world-to-camera translation t."""
        return self.world_to_camera[:3, 3]

    @property
    def centre(self) -> torch.Tensor:
        """(3,) the camera's position in world coordinates, ``-R^T t``."""
        return -self.rotation.T @ self.translation

    @property
    def intrinsics(self) -> torch.Tensor:
        """(3, 3) K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, factor: float) -> Camera:
        """The same view at ``factor`` times the resolution (intrinsics scaled with it)."""
        width, height = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = width / self.width, height / self.height
        return Camera(
            self.world_to_camera.clone(),
            self.fx * sx,
            self.fy * sy,
            self.cx * sx,
            self.cy * sy,
            width,
            height,
            self.name,
        )

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (N, 3) -> (pixels (N, 2) as (u, v), depth z (N,)); points behind the
        camera get meaningless pixels and z <= 0."""
        cam = points @ self.rotation.T.to(points) + self.translation.to(points)
        z = cam[:, 2]
        safe = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
        u = self.fx * cam[:, 0] / safe + self.cx
        v = self.fy * cam[:, 1] / safe + self.cy
        return torch.stack([u, v], dim=1), z


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """The (4, 4) world-to-camera matrix (OpenCV axes) of a camera at ``eye`` looking at
    ``target``, with image-up as close to world ``up`` as possible. ValueError when the view
    direction is parallel to ``up``."""
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    up = torch.as_tensor(up, dtype=torch.float64)
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if float(right.norm()) < 1e-8:
        raise ValueError("look_at: the view direction is parallel to 'up'; choose another up")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rotation = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = rotation
    w2c[:3, 3] = -rotation @ eye
    return w2c.float()


# OpenGL camera axes (x right, y up, z back) -> OpenCV (x right, y down, z forward).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def camera_from_opengl(c2w_opengl, **intrinsics) -> Camera:
    """A :class:`Camera` from a nerfstudio / Blender camera-to-world matrix (3x4 or 4x4,
    OpenGL axes). ``intrinsics``: fx, fy, cx, cy, width, height, name."""
    c2w = torch.as_tensor(c2w_opengl, dtype=torch.float64)
    if c2w.shape == (3, 4):
        c2w = torch.cat([c2w, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    name = intrinsics.get("name", "")
    if c2w.shape != (4, 4):
        raise ValueError(
            f"camera '{name}': transform_matrix must be 3x4 or 4x4, got {tuple(c2w.shape)}"
        )
    if not bool(torch.isfinite(c2w).all()):
        raise ValueError(
            f"camera '{name}': the pose has NaN or infinite values; fix or drop this view"
        )
    w2c = torch.linalg.inv(c2w @ _GL_TO_CV)
    return Camera(w2c, **intrinsics)


def opengl_from_camera(camera: Camera) -> torch.Tensor:
    """The (4, 4) OpenGL camera-to-world matrix of ``camera`` (inverse of
    :func:`camera_from_opengl`), as nerfstudio / Blender ``transforms.json`` store it."""
    return torch.linalg.inv(camera.world_to_camera.double()) @ _GL_TO_CV
