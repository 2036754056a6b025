"""3D Gaussian Splatting scenes in the PLY layout every 3DGS trainer writes (graphdeco-inria's
gaussian-splatting ``save_ply``, gsplat's exporter, nerfstudio's splatfacto, Postshot,
Polycam): one ``vertex`` element with

    x y z                      the mean
    nx ny nz                   unused normals (zeros in 3DGS)
    f_dc_0..2                  degree-0 SH coefficients, one per colour channel
    f_rest_0..3(K-1)-1         the other SH coefficients, channel-major: f_rest_{c (K-1) + j}
                               is channel c's coefficient j + 1 (K = 1, 4, 9, 16: degree 0-3)
    opacity                    a logit (opacity = sigmoid)
    scale_0..2                 log standard deviations
    rot_0..3                   a quaternion (w, x, y, z), not necessarily normalised

binary little-endian or ASCII (read; written binary). :func:`read_splat` gives a :class:`Splat` (a
:class:`~ovseg.fields.gaussians.GaussianCloud` plus every other property, in file order) and
:func:`write_splat` writes one back, so a read-write round trip keeps every property and value.
Parsing and writing the PLY container is trimesh's; the checks are ovseg's.
:func:`write_relevancy_ply` writes a field's Gaussian centres coloured by a query instead.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.gaussians import SH_COEFFICIENTS, GaussianCloud
from ovseg.fileio import atomic_write

REQUIRED = (
    "x",
    "y",
    "z",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
)
HOW_TO_MAKE = (
    "make one with any 3DGS trainer (gaussian-splatting, gsplat, nerfstudio splatfacto) and "
    "pass its point_cloud.ply, or fit one with 'ovseg fields fit SCENE --out FIELD' and pass "
    "--splat FIELD"
)
_PLY_TYPES = {
    "char": 1,
    "uchar": 1,
    "int8": 1,
    "uint8": 1,
    "short": 2,
    "ushort": 2,
    "int16": 2,
    "uint16": 2,
    "int": 4,
    "uint": 4,
    "int32": 4,
    "uint32": 4,
    "float": 4,
    "float32": 4,
    "double": 8,
    "float64": 8,
}


class SplatError(ValueError):
    """A file that is not a readable Gaussian splat (the message names the file and why)."""


@dataclass
class Splat:
    """A Gaussian splat as read from (or to be written to) a PLY file.

    Attributes:
        cloud: the Gaussians (means, log-scales, quaternions as stored, opacity logits, SH).
        extra: every other vertex property (``nx``, ``ny``, ``nz``, a trainer's own), (N,)
            arrays in file order; written back unchanged.
    """

    cloud: GaussianCloud
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cloud)

    def subset(self, keep: torch.Tensor | np.ndarray) -> Splat:
        """The Gaussians where ``keep`` (N,) bool is True, every property kept."""
        keep_t = torch.as_tensor(keep, dtype=torch.bool)
        tensors = [getattr(self.cloud, name).detach()[keep_t] for name in _CLOUD_PARAMETERS]
        keep_np = keep_t.numpy()
        return Splat(GaussianCloud(*tensors), {k: v[keep_np] for k, v in self.extra.items()})


_CLOUD_PARAMETERS = ("means", "log_scales", "quaternions", "opacity_logits", "sh")


def read_splat(path: str | Path) -> Splat:
    """Read a 3DGS PLY (module doc layout).

    Returns: a :class:`Splat` with float32 tensors.
    Raises: SplatError (one line naming ``path``) when the file is missing, not a PLY, not a
        Gaussian splat (a mesh or plain point cloud: the missing properties are named), when
        its vertex count disagrees with its data, or when values are NaN / infinite or a
        quaternion is zero.
    """
    path = Path(path)
    if not path.is_file():
        raise SplatError(f"{path}: no such file; {HOW_TO_MAKE}")
    header, header_bytes = _read_header(path)
    properties = header["vertex_properties"]
    missing = [name for name in REQUIRED if name not in properties]
    if missing:
        raise SplatError(
            f"{path}: not a Gaussian splat (a mesh or plain point cloud?): its vertices lack "
            f"{', '.join(missing)}; {HOW_TO_MAKE}"
        )
    rest = sorted((p for p in properties if p.startswith("f_rest_")), key=_property_number)
    coefficients = len(rest) // 3 + 1
    if (
        len(rest) % 3
        or coefficients not in SH_COEFFICIENTS
        or rest != [f"f_rest_{i}" for i in range(len(rest))]
    ):
        raise SplatError(
            f"{path}: {len(rest)} f_rest properties do not make SH of degree 0-3 "
            "(expected 0, 9, 24 or 45, named f_rest_0 ...)"
        )
    _check_size(path, header, header_bytes)
    data = _vertex_data(path)
    count = header["vertex_count"]
    held = np.asarray(data["x"]).size
    if held != count:
        raise SplatError(
            f"{path}: the header says {count} vertices but the file holds {held}; "
            "the file is truncated or corrupt: export it again"
        )

    def column(name: str) -> np.ndarray:
        values = np.asarray(data[name], dtype=np.float32).reshape(-1)
        bad = ~np.isfinite(values)
        if bad.any():
            raise SplatError(
                f"{path}: property '{name}' is NaN or infinite at {int(bad.sum())} vertices "
                f"(first: vertex {int(np.argmax(bad))}); remove those Gaussians or re-export"
            )
        return values

    def stack(names: list[str]) -> torch.Tensor:
        return torch.from_numpy(
            np.stack([column(n) for n in names], 1) if names else np.zeros((count, 0), np.float32)
        )

    quaternions = stack([f"rot_{i}" for i in range(4)])
    zero = quaternions.norm(dim=1) == 0
    if bool(zero.any()):
        raise SplatError(
            f"{path}: {int(zero.sum())} vertices have a zero rotation quaternion (first: vertex "
            f"{int(torch.nonzero(zero)[0])}); remove those Gaussians or re-export"
        )
    dc = stack(["f_dc_0", "f_dc_1", "f_dc_2"])
    sh = torch.zeros(count, coefficients, 3)
    sh[:, 0] = dc
    if rest:
        sh[:, 1:] = stack(rest).reshape(count, 3, coefficients - 1).transpose(1, 2)
    cloud = GaussianCloud(
        stack(["x", "y", "z"]),
        stack(["scale_0", "scale_1", "scale_2"]),
        quaternions,
        stack(["opacity"])[:, 0],
        sh,
    )
    used = set(REQUIRED) | set(rest)
    extra = {
        name: np.ascontiguousarray(data[name]).reshape(-1)
        for name in properties
        if name not in used
    }
    return Splat(cloud.eval().requires_grad_(False), extra)


def splat_properties(splat: Splat) -> dict[str, np.ndarray]:
    """The PLY vertex properties of ``splat`` in the 3DGS order (x y z, then ``extra`` - nx ny
    nz first, zeros when absent -, f_dc, f_rest, opacity, scale, rot), as (N,) arrays."""
    cloud = splat.cloud
    n = len(cloud)

    def numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().float().numpy()

    columns: dict[str, np.ndarray] = {}
    means = numpy(cloud.means)
    for k, name in enumerate("xyz"):
        columns[name] = means[:, k]
    extra = dict(splat.extra)
    for name in ("nx", "ny", "nz"):
        columns[name] = extra.pop(name, np.zeros(n, np.float32))
    columns.update(extra)
    sh = numpy(cloud.sh)
    for c in range(3):
        columns[f"f_dc_{c}"] = sh[:, 0, c]
    rest = sh[:, 1:].transpose(0, 2, 1).reshape(n, 3 * (sh.shape[1] - 1))  # channel-major (3DGS)
    for i in range(rest.shape[1]):
        columns[f"f_rest_{i}"] = rest[:, i]
    columns["opacity"] = numpy(cloud.opacity_logits)
    scales, quaternions = numpy(cloud.log_scales), numpy(cloud.quaternions)
    for k in range(3):
        columns[f"scale_{k}"] = scales[:, k]
    for k in range(4):
        columns[f"rot_{k}"] = quaternions[:, k]
    return columns


def write_splat(path: str | Path, splat: Splat) -> int:
    """Write ``splat`` as a binary little-endian 3DGS PLY, atomically (a temp file, then
    renamed). Returns the number of Gaussians written."""
    import trimesh

    columns = splat_properties(splat)
    xyz = np.stack([columns.pop("x"), columns.pop("y"), columns.pop("z")], 1)
    cloud = trimesh.Trimesh(
        vertices=xyz,
        faces=np.zeros((0, 3), np.int64),
        process=False,
        vertex_attributes={k: np.ascontiguousarray(v) for k, v in columns.items()},
    )
    data = trimesh.exchange.ply.export_ply(cloud, encoding="binary", include_attributes=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return len(xyz)


def _property_number(name: str) -> int:
    suffix = name.rsplit("_", 1)[1]
    return int(suffix) if suffix.isdigit() else -1


def _read_header(path: Path) -> tuple[dict, int]:
    """The PLY header's format, elements and vertex properties, and its length in bytes."""
    with open(path, "rb") as file:
        if file.read(4) != b"ply\n":
            raise SplatError(f"{path}: not a PLY file (no 'ply' magic line); {HOW_TO_MAKE}")
        lines, size = [], 4
        while True:
            line = file.readline(4096)
            if not line:
                raise SplatError(f"{path}: the PLY header never ends (no end_header)")
            size += len(line)
            text = line.decode("ascii", errors="replace").strip()
            if text == "end_header":
                break
            lines.append(text.split())
    header = {"format": None, "elements": [], "vertex_properties": [], "vertex_count": 0}
    for words in lines:
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            header["format"] = words[1] if len(words) > 1 else None
        elif words[0] == "element" and len(words) == 3:
            header["elements"].append(
                {"name": words[1], "count": int(words[2]), "row": 0, "lists": False}
            )
        elif words[0] == "property" and header["elements"]:
            element = header["elements"][-1]
            if words[1] == "list":
                element["lists"] = True
            else:
                element["row"] += _PLY_TYPES.get(words[1], 0)
                if element["name"] == "vertex":
                    header["vertex_properties"].append(words[-1])
    formats = ("binary_little_endian", "binary_big_endian", "ascii")
    if header["format"] not in formats:
        raise SplatError(f"{path}: unknown PLY format '{header['format']}'")
    vertex = [e for e in header["elements"] if e["name"] == "vertex"]
    if not vertex:
        raise SplatError(f"{path}: the PLY has no vertex element; {HOW_TO_MAKE}")
    header["vertex_count"] = vertex[0]["count"]
    return header, size


def _check_size(path: Path, header: dict, header_bytes: int) -> None:
    """For binary files of fixed-size rows: the data's length must match the vertex count."""
    if header["format"] == "ascii" or any(e["lists"] and e["count"] for e in header["elements"]):
        return
    expected = header_bytes + sum(e["count"] * e["row"] for e in header["elements"])
    actual = path.stat().st_size
    if actual != expected:
        vertex = next(e for e in header["elements"] if e["name"] == "vertex")
        holds = (actual - header_bytes) / vertex["row"] if vertex["row"] else 0
        raise SplatError(
            f"{path}: the header says {vertex['count']} vertices but the data holds "
            f"{holds:.1f}; the file is truncated or corrupt: export it again"
        )


def _vertex_data(path: Path):
    """The vertex element's columns by name (a structured array, or a dict for ASCII)."""
    from trimesh.exchange.ply import load_ply

    with open(path, "rb") as file:
        try:
            loaded = load_ply(io.BytesIO(file.read()))
        except (ValueError, IndexError, KeyError, TypeError) as error:
            raise SplatError(f"{path}: the PLY data cannot be parsed ({error})") from None
    raw = loaded.get("metadata", {}).get("_ply_raw", {})
    if "vertex" not in raw:
        raise SplatError(f"{path}: the PLY has no vertex data")
    return raw["vertex"]["data"]


def write_relevancy_ply(
    path,
    means: torch.Tensor,
    opacities: torch.Tensor,
    scores: torch.Tensor,
    min_opacity: float = 0.05,
) -> int:
    """Gaussian centres ``means`` (N, 3) with opacity >= ``min_opacity`` as a PLY point cloud
    coloured by ``scores`` (N,) (Turbo, 0.5 and below dark blue), with a float ``relevancy``
    property; returns the number of points."""
    import trimesh

    from ovseg.visualize import turbo

    keep = opacities >= min_opacity
    points = means[keep].numpy()
    values = scores[keep].numpy()
    colours = turbo(np.clip((values - 0.5) / 0.5, 0, 1))
    rgba = np.concatenate([colours, np.full((len(points), 1), 255, np.uint8)], 1)
    mesh = trimesh.Trimesh(
        vertices=points,
        faces=np.zeros((0, 3), np.int64),
        vertex_colors=rgba,
        vertex_attributes={"relevancy": values.astype(np.float32)},
        process=False,
    )
    data = trimesh.exchange.ply.export_ply(mesh, include_attributes=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return len(points)
