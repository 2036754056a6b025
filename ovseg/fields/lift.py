"""Training-free language fields: ovseg's 2D features lifted onto a fixed Gaussian splat.

Occam's LGS (Cheng et al. 2024) shows that a Gaussian's language feature needs no training:
it is the average of the 2D features of the pixels it contributes to, weighted by its
alpha-blending weights w = alpha T of the ordinary forward pass,

    f_g = sum_views sum_pixels w_gp F_p / sum_views sum_pixels w_gp,

and that Gaussians seen too little are best left without one. Here F_p is the frozen CLIP
embedding of the panoptic segment pixel p belongs to (mask pooling, as the trained fields
learn from), so a Gaussian's feature is a mixture of segment embeddings. It is stored that
way, in the full CLIP dimension with no autoencoder:

- the scene's segments' embeddings (S, D), S a few thousand at most (views x segments);
- per Gaussian its ``mixture`` heaviest segments and their weights (int32 + float16), its
  total weight, and the norm of its mixture.

For 1 M Gaussians and 8 segments each that is 1 M x 8 x 6 B = 48 MB plus 8 MB, against
1.5 GB for fp16 vectors of D = 768 (PCA to 64 fp16 channels would be 128 MB and lossy). A
text query is one product with the S segment embeddings and a gather: every Gaussian's
relevancy at once, no rendering. Segment weights are merged view by view and cut to the
heaviest ``mixture``: a Gaussian seen in many views keeps its strongest views' segments
(they agree on what it is), not a weighted sum of all of them.

:func:`lift_field` writes a field folder::

    FIELD/field.json             what it was made from (scene, splat and its size, model, CLIP
                                 fingerprint, settings), stage timings, "complete"
    FIELD/features/VIEW.npz      each view's segment map and embeddings (2D inference, cached)
    FIELD/lift_state.npz         the lifting's progress (views done), while it runs
    FIELD/refine_state.npz       the least-squares refinement's progress, while it runs
    FIELD/lifted.safetensors     segment embeddings and per-Gaussian mixtures (refined: and
                                 each Gaussian's correction in a basis, format 2)

With ``LiftConfig.refine_iterations`` the averages are refined by least squares so that their
render matches the views (:mod:`ovseg.fields.lift_refine`).

:class:`LiftedField` loads one and answers queries.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.camera import Camera
from ovseg.fields.fast_raster import project_fast, render_fast
from ovseg.fields.folders import (
    FieldError,
    check_same_clip,
    model_identity,
    read_finished_meta,
    segment_rule,
)
from ovseg.fields.gaussians import covariance_3d
from ovseg.fields.posed_images import PosedImages, load_posed_images
from ovseg.fields.splat_ply import Splat, read_splat, write_splat
from ovseg.fields.stages import default_mask_vocabulary, resume_meta, run_stage, view_features
from ovseg.fileio import atomic_write, write_text_atomic

FORMAT = "ovseg-lifted-field/1"
# refined by least squares: the mixtures plus a correction per Gaussian that a format-1
# reader would ignore, so such a folder says so and that reader refuses it
FORMAT_REFINED = "ovseg-lifted-field/2"


@dataclass
class LiftConfig:
    """What a lift depends on (stored in field.json; a resumed lift must match)."""

    mixture: int = 8  # segments kept per Gaussian
    # Occam's LGS filter: a Gaussian whose blending weights over all views sum below this
    # (in pixels: 0.05 = a twentieth of one fully covered pixel) gets no feature
    min_weight: float = 0.05
    image_scale: float = 1.0  # views are rasterized at this fraction of their size
    mask_vocabulary: str | None = None  # None: the model's default vocabulary
    # least-squares refinement (ovseg.fields.lift_refine): passes over the views, and the
    # size of the basis its per-Gaussian corrections live in
    refine_iterations: int = 0
    refine_rank: int = 32

    def to_dict(self) -> dict:
        """JSON's view; without refinement the keys format 1 had, so a plain lift's
        field.json is the one earlier versions wrote and resume."""
        values = json.loads(json.dumps(asdict(self)))
        if not self.refine_iterations:
            del values["refine_iterations"], values["refine_rank"]
        return values


def read_splat_source(path: str | Path) -> Splat:
    """A 3DGS PLY file, or an ovseg field folder fitted by ``ovseg fields fit`` (its
    gaussians.safetensors). Raises SplatError / FieldError with one line."""
    path = Path(path)
    if path.is_dir():
        from ovseg.fields.fit import PARAMETERS
        from ovseg.fields.folders import read_field_tensors
        from ovseg.fields.gaussians import GaussianCloud

        read_finished_meta(path, "ovseg-language-field/1", "3D language field (fields fit)")
        tensors = read_field_tensors(path / "gaussians.safetensors", PARAMETERS)
        cloud = GaussianCloud(*(tensors[name] for name in PARAMETERS[:5]))
        return Splat(cloud.eval().requires_grad_(False))
    return read_splat(path)


def splat_identity(path: str | Path) -> dict:
    """What a lift depends on of its splat: the resolved path, size and modification time."""
    path = Path(path).resolve()
    target = path / "gaussians.safetensors" if path.is_dir() else path
    stat = target.stat()
    return {"splat": str(path), "splat_bytes": stat.st_size, "splat_mtime": stat.st_mtime}


def lift_scene(
    scene_path: str | Path, cameras_json: str | Path | None = None, *, check_images: bool = True
) -> PosedImages:
    """The posed images of a lift: ``scene_path`` in any format :func:`load_posed_images`
    reads, or with ``cameras_json`` (3DGS's cameras.json) those cameras and the images in
    ``scene_path``/images (or ``scene_path``). Raises PosedImagesError."""
    if cameras_json is None:
        return load_posed_images(scene_path, check_images=check_images)
    from ovseg.fields.inria_cameras import load_inria_cameras

    images = Path(scene_path) / "images"
    return load_inria_cameras(cameras_json, images if images.is_dir() else scene_path)


def check_cameras_see(splat: Splat, cameras: list[Camera]) -> None:
    """ValueError naming the first camera that sees none of the splat's Gaussian centres."""
    means = splat.cloud.means.detach()
    if len(means) == 0:
        raise ValueError("the splat has no Gaussians: nothing to lift onto")
    for camera in cameras:
        pixels, depth = camera.project(means)
        inside = (
            (depth > 0.01)
            & (pixels[:, 0] >= 0)
            & (pixels[:, 0] < camera.width)
            & (pixels[:, 1] >= 0)
            & (pixels[:, 1] < camera.height)
        )
        if not bool(inside.any()):
            raise ValueError(
                f"camera '{camera.name}' sees none of the splat's {len(means)} Gaussians: the "
                "splat and the cameras are in different coordinate frames (or the pose is "
                "wrong); give the cameras the splat was trained with"
            )


def lift_field(
    scene_path: str | Path,
    splat_path: str | Path,
    out: str | Path,
    predictor,
    cfg: LiftConfig | None = None,
    *,
    cameras_json: str | Path | None = None,
    scene: PosedImages | None = None,
    splat: Splat | None = None,
    progress: bool = True,
    checkpoint_seconds: float = 60.0,
) -> dict:
    """Lift ovseg's 2D features onto the splat at ``splat_path`` from the "train" views of
    the scene at ``scene_path`` (any format :func:`load_posed_images` reads; with
    ``cameras_json`` 3DGS's cameras and the images in ``scene_path``; ``scene`` when already
    loaded from them; ``splat`` when already read from ``splat_path``), into the folder
    ``out``, resuming whatever a previous run left (features per view; the lifting every
    ``checkpoint_seconds``). Returns field.json's dict.

    Raises: PosedImagesError / SplatError for a bad scene or splat; ValueError for bad
    refinement settings, when a camera sees none of the Gaussians or no view gave a
    segment; FieldError when ``out`` holds a field of another scene, splat, model or settings.
    """
    cfg = cfg or LiftConfig()
    if cfg.refine_iterations < 0 or cfg.refine_rank < 1:
        raise ValueError("refine_iterations >= 0 and refine_rank >= 1, please")
    out = Path(out)
    scene = scene or lift_scene(scene_path, cameras_json)
    splat = splat or read_splat_source(splat_path)
    train = scene.split("train")
    cameras = [scene.cameras[i] for i in train]
    if cfg.image_scale != 1.0:
        cameras = [camera.scaled(cfg.image_scale) for camera in cameras]
    check_cameras_see(splat, cameras)  # before anything is written
    meta_path = out / "field.json"
    meta = {
        "format": FORMAT_REFINED if cfg.refine_iterations else FORMAT,
        "scene": str(Path(scene_path).resolve()),
        "cameras": str(Path(cameras_json).resolve()) if cameras_json else None,
        "train_views": [camera.name for camera in cameras],
        **splat_identity(splat_path),
        "gaussians": len(splat),
        **model_identity(predictor),
        **segment_rule(predictor),
        "config": cfg.to_dict(),
        "timings_s": {},
        "complete": False,
    }
    resume_meta(
        meta_path,
        meta,
        keys=(
            "scene",
            "cameras",
            "splat",
            "splat_bytes",
            "model",
            "clip_fingerprint",
            "keep_novel",
            "config",
            "train_views",
        ),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    predictor.set_vocabulary(cfg.mask_vocabulary or default_mask_vocabulary(predictor))
    per_view = run_stage(
        meta,
        meta_path,
        "features",
        lambda: view_features(
            predictor, scene, train, cameras, ("panoptic",), out / "features", progress
        ),
    )
    maps = [found["panoptic"][0] for found in per_view]
    embeddings = [found["panoptic"][1] for found in per_view]
    if not any(len(e) for e in embeddings):
        raise ValueError("no view gave a segment: nothing to lift (are the images blank?)")
    lifted = run_stage(
        meta,
        meta_path,
        "lift",
        lambda: lift_segments(
            splat,
            cameras,
            maps,
            cfg,
            state_path=out / "lift_state.npz",
            progress=progress,
            checkpoint_seconds=checkpoint_seconds,
            stats=meta,
        ),
    )
    tensors = finish_mixture(lifted, torch.cat([e.float() for e in embeddings]), cfg)
    if cfg.refine_iterations:
        from ovseg.fields.lift_refine import refine_mixture

        tensors = run_stage(
            meta,
            meta_path,
            "refine",
            lambda: refine_mixture(
                tensors,
                splat,
                cameras,
                maps,
                cfg.refine_iterations,
                cfg.refine_rank,
                state_path=out / "refine_state.npz",
                checkpoint_seconds=checkpoint_seconds,
                progress=progress,
                stats=meta,
            ),
        )
    from safetensors.torch import save_file

    atomic_write(out / "lifted.safetensors", lambda tmp: save_file(tensors, tmp))
    (out / "lift_state.npz").unlink(missing_ok=True)
    (out / "refine_state.npz").unlink(missing_ok=True)
    meta["lifted_gaussians"] = int((tensors["total_weight"] >= cfg.min_weight).sum())
    meta["segments"] = int(tensors["segment_embeddings"].shape[0])
    meta["complete"] = True
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    return meta


def lift_segments(
    splat: Splat,
    cameras: list[Camera],
    segment_maps: list[np.ndarray],
    cfg: LiftConfig,
    *,
    state_path: Path | None = None,
    progress: bool = True,
    checkpoint_seconds: float = 60.0,
    stats: dict | None = None,
) -> dict[str, torch.Tensor]:
    """The per-Gaussian segment mixtures over views: for view v, segment k of its map is
    global segment (segments of the views before v) + k.

    Args:
        segment_maps: per camera, (H, W) int, -1 where void (no feature), at the camera's size.
        state_path: where progress is saved (every ``checkpoint_seconds``) and resumed from.
        stats: a dict that gets ``dropped_weight`` (weight that found no segment slot) and
            ``lift_steps_s`` (seconds projecting and rasterizing + merging).
    Returns: ``segments`` (N, M) int64 (-1: empty), ``weights`` (N, M) float32, ``total``
        (N,) float32 (all blending weight on pixels with a feature).
    """
    from tqdm import tqdm

    from ovseg.fields.fast_raster import LiftAccumulator, project_fast

    offsets = np.cumsum([0] + [int(s.max()) + 1 if (s >= 0).any() else 0 for s in segment_maps])
    accumulator = LiftAccumulator(len(splat), cfg.mixture)
    done = 0
    if state_path is not None and state_path.is_file():
        with np.load(state_path) as saved:
            accumulator.segments[:] = saved["segments"]
            accumulator.weights[:] = saved["weights"]
            accumulator.total[:] = saved["total"]
            done, accumulator.dropped = int(saved["done"]), float(saved["dropped"])
    cloud = splat.cloud
    means = cloud.means.detach()
    covariances = covariance_3d(cloud.scales.detach(), cloud.quaternions.detach())
    opacities = cloud.opacities.detach()
    timings = {"project_s": 0.0, "raster_s": 0.0}
    last_save = time.perf_counter()
    for v in tqdm(
        range(done, len(cameras)),
        desc="lifting",
        disable=not progress,
        initial=done,
        total=len(cameras),
    ):
        camera, segment_map = cameras[v], segment_maps[v]
        if segment_map.shape != (camera.height, camera.width):
            raise ValueError(
                f"view '{camera.name}': segment map {segment_map.shape} is not the "
                f"camera's {camera.height} x {camera.width}"
            )
        start = time.perf_counter()
        projection = project_fast(means, covariances, camera)
        timings["project_s"] += time.perf_counter() - start
        start = time.perf_counter()
        accumulator.add_view(
            projection, opacities, segment_map, int(offsets[v]), camera.width, camera.height
        )
        timings["raster_s"] += time.perf_counter() - start
        if state_path is not None and (
            time.perf_counter() - last_save > checkpoint_seconds and v + 1 < len(cameras)
        ):
            _save_state(state_path, accumulator, v + 1)
            last_save = time.perf_counter()
    if stats is not None:
        stats["dropped_weight"] = accumulator.dropped
        stats["lift_steps_s"] = timings
    return {
        "segments": torch.from_numpy(accumulator.segments),
        "weights": torch.from_numpy(accumulator.weights),
        "total": torch.from_numpy(accumulator.total),
    }


def _save_state(path: Path, accumulator, done: int) -> None:
    arrays = {
        "segments": accumulator.segments,
        "weights": accumulator.weights,
        "total": accumulator.total,
        "done": np.array(done),
        "dropped": np.array(accumulator.dropped),
    }

    def write(tmp):
        with open(tmp, "wb") as file:
            np.savez(file, **arrays)

    atomic_write(path, write)


def finish_mixture(
    state: dict, segment_embeddings: torch.Tensor, cfg: LiftConfig
) -> dict[str, torch.Tensor]:
    """The stored field: ``segment_embeddings`` (S, D) float16 (L2-normalised),
    ``mixture_segments`` (N, M) int32 (-1 empty), ``mixture_weights`` (N, M) float16 summing
    to 1 per lifted Gaussian, ``total_weight`` (N,) float32, ``norms`` (N,) float32 (the
    length of each Gaussian's weighted mean of unit embeddings; 0 for unlifted ones)."""
    embeddings = torch.nn.functional.normalize(segment_embeddings.float(), dim=1)
    segments, weights = state["segments"], state["weights"].clone()
    lifted = state["total"] >= cfg.min_weight
    weights[~lifted] = 0
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    weights16 = weights.half()
    norms = mixture_norms(embeddings.half().float(), segments, weights16.float())
    return {
        "segment_embeddings": embeddings.half().contiguous(),
        "mixture_segments": torch.where(weights16 > 0, segments, -1).to(torch.int32),
        "mixture_weights": weights16.contiguous(),
        "total_weight": state["total"].float().contiguous(),
        "norms": norms.contiguous(),
    }


def mixture_norms(
    embeddings: torch.Tensor, segments: torch.Tensor, weights: torch.Tensor, *, chunk: int = 1 << 16
) -> torch.Tensor:
    """(N,) ||sum_k w_k e_{s_k}|| through the segments' Gram matrix (S x S), in chunks."""
    gram = embeddings @ embeddings.T
    out = torch.zeros(len(segments))
    for start in range(0, len(segments), chunk):
        s = segments[start : start + chunk].long()
        w = weights[start : start + chunk] * (s >= 0)
        s = s.clamp_min(0)
        pair = gram[s[:, :, None], s[:, None, :]]  # (n, M, M)
        out[start : start + chunk] = torch.einsum("nk,nkl,nl->n", w, pair, w).clamp_min(0).sqrt()
    return out


class LiftedField:
    """A finished lifted field folder with its splat, loaded for queries.

    ``LiftedField.load(folder, predictor)`` checks that ``predictor`` has the CLIP the field
    was made with, and that the splat is the one lifted onto (FieldError otherwise). Only its
    text is used: a :class:`~ovseg.predictor.TextModel` does.
    """

    levels = ("panoptic",)

    def __init__(self, folder: Path, meta: dict, splat: Splat, tensors: dict, predictor):
        self.folder, self.meta, self.splat, self.predictor = folder, meta, splat, predictor
        self.segment_embeddings = tensors["segment_embeddings"].float()
        self.mixture_segments = tensors["mixture_segments"].long()
        self.mixture_weights = tensors["mixture_weights"].float()
        self.norms = tensors["norms"].float()
        self.lifted = self.norms > 0
        # the least-squares refinement's per-Gaussian correction in a basis (absent: none)
        self.refine_basis = tensors.get("refine_basis")
        self.refine_offsets = tensors.get("refine_offsets")
        self._canonical = None
        self._covariances = None

    @staticmethod
    def read_meta(folder: str | Path) -> dict:
        """field.json of a finished lifted field (no model needed); FieldError otherwise."""
        return read_finished_meta(
            folder,
            (FORMAT, FORMAT_REFINED),
            "lifted field (fields lift)",
            result="lifted.safetensors",
            verb="lift",
        )

    @classmethod
    def load(cls, folder: str | Path, predictor) -> LiftedField:
        from ovseg.fields.folders import read_field_tensors

        folder = Path(folder)
        meta = cls.read_meta(folder)
        check_same_clip(folder, meta, predictor)
        source = Path(meta["splat"])
        if not source.exists() or splat_identity(source)["splat_bytes"] != meta["splat_bytes"]:
            raise FieldError(
                f"{folder} was lifted onto {source}, which is gone or changed "
                "since; lift again onto the splat you have"
            )
        splat = read_splat_source(source)
        tensors = read_field_tensors(
            folder / "lifted.safetensors",
            [
                "segment_embeddings",
                "mixture_segments",
                "mixture_weights",
                "total_weight",
                "norms",
                # a refined field's correction per Gaussian (format 2) and only there
                *(["refine_basis", "refine_offsets"] if meta["format"] == FORMAT_REFINED else []),
            ],
            hint="the field folder is damaged or from another ovseg version: lift again",
        )
        if len(tensors["norms"]) != len(splat):
            raise FieldError(
                f"{folder}: {len(tensors['norms'])} lifted Gaussians but the splat "
                f"has {len(splat)}; lift again"
            )
        return cls(folder, meta, splat, tensors, predictor)

    def scene(self) -> PosedImages:
        """The posed images the field was lifted from (all splits)."""
        return lift_scene(self.meta["scene"], self.meta.get("cameras"), check_images=False)

    def _text(self, phrases: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from ovseg.fields.language import CANONICAL_PHRASES

        encoder = self.predictor.text_encoder
        if self._canonical is None:
            self._canonical = encoder.encode_texts(list(CANONICAL_PHRASES)).float().cpu()
        return encoder.encode_texts(phrases).float().cpu(), self._canonical

    @torch.no_grad()
    def gaussian_cosines(self, text_embeddings: torch.Tensor, *, chunk: int = 1 << 18):
        """(P, N) cosine of each Gaussian's feature with each of ``text_embeddings`` (P, D)
        (unit rows); 0 for Gaussians without a feature."""
        per_segment = self.segment_embeddings @ text_embeddings.float().T  # (S, P)
        per_segment = torch.cat([per_segment, torch.zeros(1, per_segment.shape[1])])  # -1 -> 0
        out = torch.empty(text_embeddings.shape[0], len(self.norms))
        if self.refine_basis is not None:
            per_axis = self.refine_basis.float() @ text_embeddings.float().T  # (k, P)
        for start in range(0, len(self.norms), chunk):
            s = self.mixture_segments[start : start + chunk]
            w = self.mixture_weights[start : start + chunk]
            dots = torch.einsum("nk,nkp->pn", w, per_segment[s])
            if self.refine_basis is not None:
                dots += (self.refine_offsets[start : start + chunk].float() @ per_axis).T
            out[:, start : start + chunk] = dots / self.norms[start : start + chunk].clamp_min(1e-6)
        return out

    @torch.no_grad()
    def gaussian_relevancy(self, phrases: list[str]) -> torch.Tensor:
        """(P, N) LangSplat relevancy of each Gaussian's feature (0 where it has none)."""
        from ovseg.heatmap import check_phrases
        from ovseg.modeling.pixel_text import RELEVANCY_TEMPERATURE

        phrase_embeddings, canonical = self._text(check_phrases(phrases))
        cosines = self.gaussian_cosines(torch.cat([phrase_embeddings, canonical]))
        phrase, canon = cosines[: len(phrases)], cosines[len(phrases) :]
        scores = torch.sigmoid(RELEVANCY_TEMPERATURE * (phrase - canon.amax(0, keepdim=True)))
        return torch.where(self.lifted[None], scores, torch.zeros_like(scores))

    @torch.no_grad()
    def render(self, camera: Camera, channels: torch.Tensor | None = None) -> dict:
        """Render ``camera``: ``rgb`` (H, W, 3) in [0, 1], ``alpha`` (H, W), and with
        ``channels`` (N, C) per-Gaussian values their blend normalised by the weight of lifted
        Gaussians, ``values`` (H, W, C), with ``covered`` (H, W) that weight."""
        cloud = self.splat.cloud
        if self._covariances is None:
            self._covariances = covariance_3d(cloud.scales, cloud.quaternions)
        projection = project_fast(cloud.means, self._covariances, camera)
        parts = [cloud.colours(camera.centre), self.lifted.float()[:, None]]
        if channels is not None:
            parts.append(channels.float())
        out = render_fast(
            projection, cloud.opacities, torch.cat(parts, 1), camera.width, camera.height
        )
        features = out["features"]
        result = {
            "rgb": features[..., :3].clamp(0, 1),
            "alpha": out["alpha"],
            "covered": features[..., 3],
        }
        if channels is not None:
            result["values"] = features[..., 4:] / features[..., 3:4].clamp_min(1e-6)
        return result

    @torch.no_grad()
    def pixel_cosines(self, camera: Camera, embeddings: torch.Tensor) -> dict:
        """Render ``camera``: at each pixel the blend of its lifted Gaussians' cosines with
        ``embeddings`` (P, D) unit rows, divided by their weight (the mean cosine):
        ``cosines`` (H, W, P) (0 where no lifted Gaussian covers the pixel), ``rgb``,
        ``alpha``, ``covered`` (the lifted Gaussians' weight). Normalising the blended
        feature instead (LangSplat normalises its decoded pixels) measured no better on the
        3D world (``ovseg bench-lift``: mIoU 43.6 either way) and costs a basis to render."""
        rendered = self.render(camera, self.gaussian_cosines(embeddings).T.contiguous())
        covered = rendered["covered"][..., None] > 0.05
        values = rendered["values"]
        rendered["cosines"] = torch.where(covered, values, torch.zeros_like(values))
        return rendered

    @torch.no_grad()
    def relevancy(self, camera: Camera, phrases: list[str]) -> dict[str, torch.Tensor]:
        """Render ``camera`` and score every pixel for each phrase: ``relevancy`` (P, H, W) in
        (0, 1) (LangSplat's ratio against the canonical phrases on the pixels' normalised
        features, :meth:`pixel_cosines`; 0 where no lifted Gaussian covers the pixel),
        ``rgb`` (H, W, 3), ``alpha``."""
        from ovseg.heatmap import check_phrases
        from ovseg.modeling.pixel_text import RELEVANCY_TEMPERATURE

        phrases = check_phrases(phrases)
        phrase_embeddings, canonical = self._text(phrases)
        rendered = self.pixel_cosines(camera, torch.cat([phrase_embeddings, canonical]))
        values = rendered["cosines"].permute(2, 0, 1)
        phrase, canon = values[: len(phrases)], values[len(phrases) :]
        scores = torch.sigmoid(RELEVANCY_TEMPERATURE * (phrase - canon.amax(0, keepdim=True)))
        scores = torch.where(rendered["covered"][None] > 0.05, scores, torch.zeros_like(scores))
        return {
            "relevancy": scores,
            "levels": ["panoptic"] * len(phrases),
            "rgb": rendered["rgb"],
            "alpha": rendered["alpha"],
        }

    @torch.no_grad()
    def class_scores(self, camera: Camera, class_embeddings: torch.Tensor) -> torch.Tensor:
        """(H, W, C) each pixel's normalised feature against each class embedding."""
        return self.pixel_cosines(camera, class_embeddings)["cosines"]

    def extract(self, path: str | Path, phrase: str, *, threshold: float = 0.5) -> int:
        """Write the Gaussians whose relevancy to ``phrase`` is above ``threshold`` as a 3DGS
        PLY with every property of the source splat; returns how many."""
        keep = self.gaussian_relevancy([phrase])[0] > threshold
        return write_splat(path, self.splat.subset(keep))

    def export_ply(self, path: str | Path, phrase: str, *, min_opacity: float = 0.05) -> int:
        """The Gaussians' centres coloured by relevancy to ``phrase`` (as
        :meth:`ovseg.fields.field.LanguageField.export_ply`); returns the number of points."""
        from ovseg.fields.splat_ply import write_relevancy_ply

        cloud = self.splat.cloud
        return write_relevancy_ply(
            path,
            cloud.means.detach(),
            cloud.opacities.detach(),
            self.gaussian_relevancy([phrase])[0],
            min_opacity,
        )
