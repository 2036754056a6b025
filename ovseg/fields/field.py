"""A language field: Gaussians fitted to a scene's posed views, with a language latent that
decodes to the frozen CLIP's embedding space, queried with any text in any camera.

:func:`fit_field` runs LangSplat's pipeline on ovseg's parts, each stage resumable, into a
field folder::

    FIELD/field.json              what it was made from and with (scene, model, CLIP
                                  fingerprint, settings), stage timings, and "complete"
    FIELD/colour.pt               (a) the colour fit's checkpoint
    FIELD/features/VIEW.npz       (b) each training view's segment map and embeddings
    FIELD/autoencoder.safetensors (c) CLIP dim <-> latent
    FIELD/language.pt             (d) the latent fit's checkpoint
    FIELD/gaussians.safetensors   the finished Gaussians (colour, geometry, latents)

:class:`LanguageField` loads a finished folder and answers queries (e) without refitting.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.camera import Camera
from ovseg.fields.fit import PARAMETERS, FitConfig, LatentFitConfig, View, fit_latents, fit_rgb
from ovseg.fields.gaussians import GaussianCloud
from ovseg.fields.language import LanguageAutoencoder, latent_relevancy, train_autoencoder
from ovseg.fields.posed_images import PosedImages, load_posed_images, view_file_stem
from ovseg.fields.rasterizer import render
from ovseg.fileio import atomic_write, write_text_atomic

FORMAT = "ovseg-language-field/1"


class FieldError(ValueError):
    """A field folder is missing, unfinished, or made with another model (message says)."""


@dataclass
class FieldConfig:
    """Everything a fit depends on (stored in field.json; a resumed fit must match)."""

    colour: FitConfig = field(default_factory=FitConfig)
    language: LatentFitConfig = field(default_factory=LatentFitConfig)
    latent_dim: int = 3  # per mask level
    # mask granularities (ovseg.fields.language.LEVELS): each gets latent_dim channels of
    # its own, like LangSplat's three SAM levels (it fits three fields; one cloud with a
    # latent per level renders them in one pass)
    levels: tuple[str, ...] = ("panoptic",)
    autoencoder_iterations: int = 2000
    image_scale: float = 1.0  # views are fitted at this fraction of their size
    mask_vocabulary: str | None = None  # None: the model's default vocabulary

    def to_dict(self) -> dict:
        """JSON's view of the settings (tuples as lists), as field.json stores them."""
        return json.loads(json.dumps(asdict(self)))


def load_views(scene: PosedImages, indices: list[int], scale: float = 1.0) -> list[View]:
    """The views ``indices`` of ``scene`` with their images as (H, W, 3) floats in [0, 1],
    resized by ``scale`` (cameras scaled with them)."""
    from PIL import Image

    views = []
    for index in indices:
        camera = scene.cameras[index]
        with Image.open(scene.image_paths[index]) as image:
            image = image.convert("RGB")
            if scale != 1.0:
                camera = camera.scaled(scale)
                image = image.resize((camera.width, camera.height), Image.BILINEAR)
            array = np.array(image, dtype=np.float32) / 255.0
        views.append(View(camera, torch.from_numpy(array)))
    return views


def model_identity(predictor) -> dict:
    """What a field's embeddings depend on: the model's name and its CLIP's fingerprint."""
    return {
        "model": str(predictor.model_name),
        "clip_fingerprint": predictor.model.backbone.text_fingerprint(),
        "embed_dim": int(predictor.model.backbone.embed_dim),
    }


def default_mask_vocabulary(predictor) -> str:
    """The vocabulary whose panoptic segments give a field its masks when none is chosen: a
    toy model's own world, else COCO-panoptic's 133 classes (broad, like SAM's "everything";
    the embeddings stay CLIP's, so queries are not limited to these names)."""
    from ovseg import model_zoo

    try:
        entry = model_zoo.get_entry(str(predictor.model_name))
    except KeyError:
        return "coco_panoptic"
    return entry.toy_vocabulary or "coco_panoptic"


def fit_field(
    scene_path: str | Path,
    out: str | Path,
    predictor,
    cfg: FieldConfig | None = None,
    *,
    progress: bool = True,
) -> dict:
    """Fit a language field for the scene at ``scene_path`` (any format
    :func:`~ovseg.fields.posed_images.load_posed_images` reads; its "train" views) into the
    folder ``out``, resuming whatever stage a previous run left. Returns field.json's dict.

    Raises PosedImagesError for a bad scene, FieldError when ``out`` holds a field of another
    scene, model or settings, ValueError when the scene has no initial points.
    """
    cfg = cfg or FieldConfig()
    out = Path(out)
    scene = load_posed_images(scene_path)
    train = scene.split("train")
    if scene.points is None or len(scene.points) == 0:
        raise ValueError(
            f"{scene_path}: no 3D points to start the Gaussians from; give a COLMAP model with "
            "points3D, or a transforms.json with ply_file_path"
        )
    identity = model_identity(predictor)
    meta_path = out / "field.json"
    meta = {
        "format": FORMAT,
        "scene": str(Path(scene_path).resolve()),
        "train_views": [scene.cameras[i].name for i in train],
        **identity,
        "config": cfg.to_dict(),
        "timings_s": {},
        "complete": False,
    }
    resume_meta(meta_path, meta)
    views = load_views(scene, train, cfg.image_scale)
    check_views_see_points(views, scene.points)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps(meta, indent=1))

    def timed(stage, work):
        return run_stage(meta, meta_path, stage, work)

    # (a) colours and geometry
    latent_channels = cfg.latent_dim * len(cfg.levels)
    cloud = GaussianCloud.from_points(scene.points, scene.colours, latent_dim=latent_channels)
    colour_result = timed(
        "colour",
        lambda: fit_rgb(cloud, views, cfg.colour, checkpoint=out / "colour.pt", progress=progress),
    )
    meta["colour_loss"], meta["gaussians"] = colour_result["loss"], len(cloud)
    # (b) per-view masks and their CLIP embeddings, at the fitted views' size
    predictor.set_vocabulary(cfg.mask_vocabulary or default_mask_vocabulary(predictor))
    per_view = timed(
        "features",
        lambda: view_features(
            predictor,
            scene,
            train,
            [v.camera for v in views],
            cfg.levels,
            out / "features",
            progress,
        ),
    )  # per view: {level: (segment_map, embeddings)}
    pairs = [levels[level] for levels in per_view for level in cfg.levels]
    # (c) the scene's autoencoder, on every level's embeddings
    autoencoder = timed(
        "autoencoder",
        lambda: scene_autoencoder(
            out, [e for _, e in pairs], [m for m, _ in pairs], cfg, progress, meta
        ),
    )
    # (d) latents on the frozen geometry: channels [k L, (k + 1) L) hold level k
    targets, valid = latent_targets(per_view, autoencoder, cfg.levels, cfg.latent_dim)
    language_result = timed(
        "language",
        lambda: fit_latents(
            cloud,
            [v.camera for v in views],
            targets,
            valid,
            cfg.language,
            checkpoint=out / "language.pt",
            progress=progress,
        ),
    )
    meta["language_loss"] = language_result["loss"]
    from safetensors.torch import save_file

    tensors = {name: getattr(cloud, name).detach().contiguous() for name in PARAMETERS}
    atomic_write(out / "gaussians.safetensors", lambda tmp: save_file(tensors, tmp))
    meta["complete"] = True
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    return meta


def run_stage(meta: dict, meta_path: Path, stage: str, work):
    """Run ``work()``, add its seconds to meta["timings_s"][stage] (a resumed stage adds up)
    and write ``meta`` to ``meta_path``; returns what ``work`` returned."""
    start = time.perf_counter()
    result = work()
    meta["timings_s"][stage] = meta["timings_s"].get(stage, 0.0) + time.perf_counter() - start
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    return result


def resume_meta(
    meta_path: Path,
    meta: dict,
    keys=("scene", "model", "clip_fingerprint", "config", "train_views"),
) -> None:
    """Carry a previous run's timings into ``meta``; FieldError when that run was made from
    another scene, model or settings (any of ``keys`` differs)."""
    if not meta_path.is_file():
        return
    previous = json.loads(meta_path.read_text())
    for key in keys:
        if previous.get(key) != meta[key]:
            raise FieldError(
                f"{meta_path.parent} holds a field made with another {key.replace('_', ' ')}; "
                "choose a new --out folder or delete this one"
            )
    meta["timings_s"] = previous.get("timings_s", {})
    if "autoencoder_cosine" in previous:  # measured when the autoencoder was trained
        meta["autoencoder_cosine"] = previous["autoencoder_cosine"]


@torch.no_grad()
def latent_targets(per_view, autoencoder, levels, latent_dim: int):
    """Per view, the (H, W, L x levels) target latents and where they are valid (channels
    [k L, (k + 1) L) hold level k): each pixel gets its segment's encoded embedding."""
    targets, valid = [], []
    channels_total = latent_dim * len(levels)
    for found in per_view:
        shape = next(iter(found.values()))[0].shape
        target = torch.zeros(*shape, channels_total)
        mask = torch.zeros(*shape, channels_total, dtype=torch.bool)
        for k, level in enumerate(levels):
            segment_map, view_embeddings = found[level]
            channels = slice(k * latent_dim, (k + 1) * latent_dim)
            covered = torch.from_numpy(segment_map >= 0)
            if len(view_embeddings):
                latent = autoencoder.encode(view_embeddings)
                indices = torch.from_numpy(segment_map[segment_map >= 0])
                target[..., channels][covered] = latent[indices]
                mask[..., channels] = covered[..., None]
        targets.append(target)
        valid.append(mask)
    return targets, valid


def check_views_see_points(views: list[View], points: torch.Tensor) -> None:
    for view in views:
        pixels, depth = view.camera.project(points.float())
        inside = (
            (depth > 0)
            & (pixels[:, 0] >= 0)
            & (pixels[:, 0] < view.camera.width)
            & (pixels[:, 1] >= 0)
            & (pixels[:, 1] < view.camera.height)
        )
        if not bool(inside.any()):
            raise ValueError(
                f"camera '{view.camera.name}' sees none of the scene's points: its pose is wrong "
                "or in another coordinate frame; fix or drop this view"
            )


def view_features(predictor, scene, indices, cameras, levels, folder: Path, progress: bool):
    """Each view's masks per level, ``[{level: (segment_map (H, W) int64, -1 void;
    embeddings (S, D))}]`` for the views ``indices`` of ``scene``, found on the full-size
    image; segment maps are resized (nearest) to ``cameras``' sizes (one per index). Cached per
    view in ``folder`` (one .npz each, written atomically, so an interrupted run resumes)."""
    from PIL import Image
    from tqdm import tqdm

    from ovseg.fields.language import view_levels

    per_view = []
    for index, camera in tqdm(
        list(zip(indices, cameras, strict=True)), desc="view masks", disable=not progress
    ):
        path = folder / f"{view_file_stem(camera.name)}.npz"
        if path.is_file():
            with np.load(path) as saved:
                found = {
                    level: (saved[f"{level}_map"], torch.from_numpy(saved[f"{level}_embeddings"]))
                    for level in levels
                }
        else:
            with Image.open(scene.image_paths[index]) as image:
                array = np.asarray(image.convert("RGB"))
            found = view_levels(predictor, array, tuple(levels))
            size = (camera.width, camera.height)
            for level, (segment_map, embeddings) in found.items():
                if segment_map.shape[::-1] != size:
                    resized = Image.fromarray(segment_map.astype(np.int32)).resize(
                        size, Image.NEAREST
                    )
                    found[level] = (np.asarray(resized).astype(np.int64), embeddings)
            arrays = {}
            for level, (segment_map, embeddings) in found.items():
                arrays[f"{level}_map"] = segment_map
                arrays[f"{level}_embeddings"] = embeddings.numpy()

            def write(tmp, arrays=arrays):
                with open(tmp, "wb") as file:
                    np.savez(file, **arrays)

            atomic_write(path, write)
        per_view.append(found)
    return per_view


def scene_autoencoder(
    out: Path, embeddings, segment_maps, cfg: FieldConfig, progress: bool, meta: dict
):
    """The scene's CLIP autoencoder (trained once, then loaded from ``out``); a fresh one's
    reconstruction quality goes into ``meta``."""
    from safetensors.torch import load_file, save_file

    path = out / "autoencoder.safetensors"
    dim = next((e.shape[1] for e in embeddings if len(e)), None)
    if dim is None:
        raise ValueError("no view gave a segment: nothing to ground language on")
    model = LanguageAutoencoder(dim, cfg.latent_dim)
    if path.is_file():
        model.load_state_dict(load_file(path))
        return model.eval()
    stacked = torch.cat([e for e in embeddings if len(e)])
    areas = torch.cat(
        [
            torch.from_numpy(np.bincount(m[m >= 0], minlength=len(e)).astype(np.float32))
            for m, e in zip(segment_maps, embeddings, strict=True)
            if len(e)
        ]
    )
    model, quality = train_autoencoder(
        stacked,
        areas,
        latent_dim=cfg.latent_dim,
        iterations=cfg.autoencoder_iterations,
        progress=progress,
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp))
    meta["autoencoder_cosine"] = quality
    return model


def read_finished_meta(
    folder: str | Path,
    fmt: str | tuple[str, ...],
    what: str,
    *,
    result: str = "gaussians.safetensors",
    verb: str = "fit",
) -> dict:
    """field.json of a finished field folder of format ``fmt`` (or one of them); FieldError
    when the folder
    holds none, another kind (``what`` names the expected one) or an unfinished run (no
    ``result`` file; ``verb`` names the command that resumes it)."""
    folder = Path(folder)
    meta_path = folder / "field.json"
    if not meta_path.is_file():
        raise FieldError(
            f"{folder}: no field.json; fit a field there first (ovseg fields "
            "fit SCENE --out FOLDER)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") not in ((fmt,) if isinstance(fmt, str) else fmt):
        raise FieldError(f"{folder}: field.json is not an ovseg {what}")
    if not meta.get("complete") or not (folder / result).is_file():
        raise FieldError(
            f"{folder}: the {verb} did not finish; run the same 'ovseg fields "
            f"{verb}' again to resume it"
        )
    return meta


def check_same_clip(folder: Path, meta: dict, predictor) -> None:
    """FieldError when ``predictor``'s CLIP is not the one the field was fitted with."""
    identity = model_identity(predictor)
    if identity["clip_fingerprint"] != meta["clip_fingerprint"]:
        raise FieldError(
            f"{folder} was fitted with model '{meta['model']}' (CLIP "
            f"{meta['clip_fingerprint']}), not '{identity['model']}' (CLIP "
            f"{identity['clip_fingerprint']}); query it with the model it was made with"
        )


class LanguageField:
    """A finished field folder, loaded for queries.

    ``LanguageField.load(folder, predictor)`` checks that ``predictor`` has the CLIP the field
    was made with (FieldError otherwise): its text embeddings are compared with the field's.
    """

    def __init__(self, folder: Path, meta: dict, cloud: GaussianCloud, autoencoder, predictor):
        self.folder, self.meta, self.cloud = folder, meta, cloud
        self.autoencoder, self.predictor = autoencoder, predictor
        self.levels = tuple(meta["config"].get("levels", ["panoptic"]))
        self.latent_dim = int(meta["config"]["latent_dim"])
        self._canonical = None

    def level_latents(self, latents: torch.Tensor, level: int) -> torch.Tensor:
        """The channels of mask level ``level`` (an index into ``self.levels``) of latents
        (..., L x levels)."""
        return latents[..., level * self.latent_dim : (level + 1) * self.latent_dim]

    def _best_level(self, latents: torch.Tensor, phrases: list[str]) -> tuple[torch.Tensor, list]:
        """Relevancy (P, ...) of each phrase at the mask level where it peaks highest
        (LangSplat's choice among its three levels), and those levels' names."""
        phrase_embeddings, canonical = self._text(phrases)
        per_level = torch.stack(
            [
                latent_relevancy(
                    self.autoencoder, self.level_latents(latents, k), phrase_embeddings, canonical
                )
                for k in range(len(self.levels))
            ]
        )  # (levels, P, ...)
        best = per_level.flatten(2).amax(2).argmax(0)  # (P,)
        scores = per_level[best, torch.arange(len(phrases))]
        return scores, [self.levels[int(k)] for k in best]

    @staticmethod
    def read_meta(folder: str | Path) -> dict:
        """field.json of a finished field folder (cheap: no model needed); FieldError when the
        folder holds no field or an unfinished one."""
        return read_finished_meta(folder, FORMAT, "language field")

    @classmethod
    def load(cls, folder: str | Path, predictor) -> LanguageField:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = cls.read_meta(folder)
        check_same_clip(folder, meta, predictor)
        tensors = load_file(folder / "gaussians.safetensors")
        cloud = GaussianCloud(*(tensors[name] for name in PARAMETERS))
        autoencoder = LanguageAutoencoder(meta["embed_dim"], meta["config"]["latent_dim"])
        autoencoder.load_state_dict(load_file(folder / "autoencoder.safetensors"))
        return cls(folder, meta, cloud.eval(), autoencoder.eval(), predictor)

    def scene(self) -> PosedImages:
        """The posed images the field was fitted on (all splits)."""
        return load_posed_images(self.meta["scene"], check_images=False)

    def _text(self, phrases: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from ovseg.fields.language import CANONICAL_PHRASES

        encoder = self.predictor.text_encoder
        if self._canonical is None:
            self._canonical = encoder.encode_texts(list(CANONICAL_PHRASES)).float().cpu()
        return encoder.encode_texts(phrases).float().cpu(), self._canonical

    @torch.no_grad()
    def render(self, camera: Camera) -> dict[str, torch.Tensor]:
        """``rgb`` (H, W, 3) in [0, 1], ``latent`` (H, W, L), ``alpha`` (H, W)."""
        out = render(self.cloud, camera, what="rgb+latent")
        features = out["features"]
        return {
            "rgb": features[..., :3].clamp(0, 1),
            "latent": features[..., 3:],
            "alpha": out["alpha"],
        }

    @torch.no_grad()
    def relevancy(self, camera: Camera, phrases: list[str]) -> dict[str, torch.Tensor]:
        """Render ``camera`` and score every pixel for each phrase: ``relevancy`` (P, H, W)
        in (0, 1) (LangSplat's ratio against the canonical phrases; > 0.5 means relevant) at
        the mask level where each phrase peaks (``levels``), ``rgb`` (H, W, 3), ``latent``."""
        from ovseg.heatmap import check_phrases

        phrases = check_phrases(phrases)
        rendered = self.render(camera)
        scores, levels = self._best_level(rendered["latent"], phrases)
        return {
            "relevancy": scores,
            "levels": levels,
            "rgb": rendered["rgb"],
            "alpha": rendered["alpha"],
            "latent": rendered["latent"],
        }

    @torch.no_grad()
    def gaussian_relevancy(self, phrases: list[str]) -> torch.Tensor:
        """(P, N) relevancy of each Gaussian's own latent (a 3D selection)."""
        from ovseg.heatmap import check_phrases

        scores, _ = self._best_level(self.cloud.latents.detach(), check_phrases(phrases))
        return scores

    @torch.no_grad()
    def class_scores(self, camera: Camera, class_embeddings: torch.Tensor) -> torch.Tensor:
        """(H, W, C) each pixel's decoded embedding (first mask level) against each class
        embedding (C, D): cosines, since both are unit vectors."""
        latent = self.render(camera)["latent"]
        return self.autoencoder.decode(self.level_latents(latent, 0)) @ class_embeddings.T

    def extract(self, path: str | Path, phrase: str, *, threshold: float = 0.5) -> int:
        """Write the Gaussians whose relevancy to ``phrase`` is above ``threshold`` as a 3DGS
        PLY (:mod:`ovseg.fields.splat_ply`); returns how many."""
        from ovseg.fields.splat_ply import Splat, write_splat

        keep = self.gaussian_relevancy([phrase])[0] > threshold
        return write_splat(path, Splat(self.cloud).subset(keep))

    def export_ply(self, path: str | Path, phrase: str, *, min_opacity: float = 0.05) -> int:
        """Write the Gaussians' centres (opacity >= ``min_opacity``) as a PLY point cloud
        coloured by relevancy to ``phrase``; returns the number of points."""
        return write_relevancy_ply(
            path,
            self.cloud.means.detach(),
            self.cloud.opacities.detach(),
            self.gaussian_relevancy([phrase])[0],
            min_opacity,
        )


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
