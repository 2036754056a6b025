"""A language field: Gaussians fitted to a scene's posed views, with a language latent that
decodes to the frozen CLIP's embedding space, queried with any text in any camera.

:func:`fit_field` runs LangSplat's pipeline on ovseg's parts, each stage resumable
(:mod:`ovseg.fields.stages`), into a field folder::

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ovseg.fields.camera import Camera
from ovseg.fields.fit import PARAMETERS, FitConfig, LatentFitConfig
from ovseg.fields.folders import (
    check_same_clip,
    model_identity,
    read_finished_meta,
    segment_rule,
)
from ovseg.fields.gaussians import GaussianCloud
from ovseg.fields.language import LanguageAutoencoder, latent_relevancy
from ovseg.fields.posed_images import PosedImages, load_posed_images
from ovseg.fields.rasterizer import render
from ovseg.fields.stages import (
    check_views_see_points,
    default_mask_vocabulary,
    fit_colour,
    fit_language,
    load_views,
    resume_meta,
    run_stage,
    scene_autoencoder,
    view_features,
)
from ovseg.fileio import atomic_write, write_text_atomic

FORMAT = "ovseg-language-field/1"


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
        **segment_rule(predictor),
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
    colour_result = timed("colour", lambda: fit_colour(out, cloud, views, cfg, progress=progress))
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
    cameras = [v.camera for v in views]
    language_result = timed(
        "language",
        lambda: fit_language(out, cloud, cameras, per_view, autoencoder, cfg, progress=progress),
    )
    meta["language_loss"] = language_result["loss"]
    from safetensors.torch import save_file

    tensors = {name: getattr(cloud, name).detach().contiguous() for name in PARAMETERS}
    atomic_write(out / "gaussians.safetensors", lambda tmp: save_file(tensors, tmp))
    meta["complete"] = True
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    return meta


class LanguageField:
    """A finished field folder, loaded for queries.

    ``LanguageField.load(folder, predictor)`` checks that ``predictor`` has the CLIP the field
    was made with (FieldError otherwise): its text fingerprint is compared with the field's.
    Queries use only its text: a :class:`~ovseg.predictor.TextModel` serves as well as an
    OVSegPredictor, without building the image network.
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
        from ovseg.fields.folders import load_field_module, read_field_tensors

        folder = Path(folder)
        meta = cls.read_meta(folder)
        check_same_clip(folder, meta, predictor)
        tensors = read_field_tensors(folder / "gaussians.safetensors", PARAMETERS)
        cloud = GaussianCloud(*(tensors[name] for name in PARAMETERS))
        autoencoder = load_field_module(
            LanguageAutoencoder(meta["embed_dim"], meta["config"]["latent_dim"]),
            folder / "autoencoder.safetensors",
        )
        return cls(folder, meta, cloud.eval(), autoencoder, predictor)

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
        from ovseg.fields.splat_ply import write_relevancy_ply

        return write_relevancy_ply(
            path,
            self.cloud.means.detach(),
            self.cloud.opacities.detach(),
            self.gaussian_relevancy([phrase])[0],
            min_opacity,
        )
