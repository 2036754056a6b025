"""A 4D language field: deformable Gaussians fitted to multi-view video, with a time-agnostic
language latent (ovseg's masks and their frozen-CLIP embeddings, as in 3D) and a
time-sensitive one (captions of each object's state, embedded by a sentence encoder, through
4D LangSplat's status field), queried with text and times.

:func:`fit_field4d` runs each stage resumably (:mod:`ovseg.fields.stages`) into a field
folder::

    FIELD/field.json                    scene, model, settings, time range, timings, "complete"
    FIELD/colour.pt                     (a) canonical Gaussians + deformation network
    FIELD/features/FRAME.npz            (b) each training frame's segments and CLIP embeddings
    FIELD/autoencoder.safetensors       (c) CLIP dim <-> time-agnostic latent
    FIELD/language.pt                   (d) the time-agnostic latents (geometry frozen)
    FIELD/captions.json                 (e) the captions used, and their sentence embeddings
    FIELD/caption_embeddings.safetensors    and the caption autoencoder (sentence dim <->
    FIELD/status_autoencoder.safetensors    time-sensitive latent)
    FIELD/status.pt                     (f) the status field (geometry frozen)
    FIELD/gaussians.safetensors, deformation.safetensors, status.safetensors   the result

Times: a scene's frame times (any unit) are normalised to [0, 1] over its frames for the
networks; queries take times in the scene's own unit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovseg.fields.camera import Camera
from ovseg.fields.captions import check_objects, read_captions
from ovseg.fields.deform import DeformationField, SpacetimeCloud, StatusField, deform
from ovseg.fields.fit import DeformationFitConfig, FitConfig, LatentFitConfig
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
    deformation_field,
    fit_colour,
    fit_language,
    fit_status,
    load_views,
    object_maps,
    resume_meta,
    run_stage,
    save_module,
    scene_autoencoder,
    view_features,
)
from ovseg.fileio import atomic_write, write_text_atomic

FORMAT = "ovseg-language-field-4d/1"


@dataclass
class Field4DConfig:
    """Everything a 4D fit depends on (stored in field.json; a resumed fit must match)."""

    colour: FitConfig = field(default_factory=lambda: FitConfig(iterations=1500))
    deformation: DeformationFitConfig = field(default_factory=DeformationFitConfig)
    # Spacetime Gaussians (temporal opacity, velocities; ovseg.fields.deform.SpacetimeCloud)
    # starting as time_slices copies of the points; 0: one canonical cloud, moved by the
    # deformation network alone
    time_slices: int = 2
    deformation_width: int = 64
    deformation_depth: int = 3
    position_frequencies: int = 4
    time_frequencies: int = 4
    language: LatentFitConfig = field(default_factory=LatentFitConfig)
    status: LatentFitConfig = field(default_factory=lambda: LatentFitConfig(iterations=400))
    status_states: int = 3  # prototypes per Gaussian (4D LangSplat's K)
    latent_dim: int = 3
    autoencoder_iterations: int = 2000
    image_scale: float = 1.0
    mask_vocabulary: str | None = None
    sentence_model: str = "all-MiniLM-L6-v2"

    # what the 3D helpers read of a config
    levels: tuple[str, ...] = ("panoptic",)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def normalised_times(scene: PosedImages) -> tuple[list[float], tuple[float, float]]:
    """Each view's time mapped to [0, 1] over the scene's frames, and the (first, last) time."""
    if scene.times is None:
        raise ValueError(
            "this scene has no frame times: a 4D field needs multi-view video "
            "(a 'time' on every frame of transforms.json)"
        )
    first, last = min(scene.times), max(scene.times)
    span = last - first
    if span <= 0:
        raise ValueError("every frame has the same time: nothing moves; fit a 3D field instead")
    return [(t - first) / span for t in scene.times], (first, last)


def fit_field4d(
    scene_path: str | Path,
    out: str | Path,
    predictor,
    cfg: Field4DConfig | None = None,
    *,
    captions_path: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Fit a 4D language field for the multi-view video at ``scene_path`` (transforms.json
    with frame times; its "train" frames) into ``out``, resuming any stage a previous run
    left. ``captions_path``: the objects' state captions (default SCENE/captions.json when
    there; without captions the field has no time-sensitive part). Returns field.json's dict.

    Raises PosedImagesError / CaptionsError for bad input, FieldError when ``out`` holds a
    field of another scene, model or settings, ValueError for a scene without times."""
    cfg = cfg or Field4DConfig()
    out, scene_dir = Path(out), Path(scene_path)
    scene = load_posed_images(scene_path)
    times, time_range = normalised_times(scene)
    train = scene.split("train")
    if scene.points is None or len(scene.points) == 0:
        raise ValueError(
            f"{scene_path}: no 3D points to start the Gaussians from; give a "
            "transforms.json with ply_file_path"
        )
    if captions_path is None and (scene_dir / "captions.json").is_file():
        captions_path = scene_dir / "captions.json"
    captions = read_captions(captions_path) if captions_path is not None else None
    views = load_views(scene, train, cfg.image_scale)
    for view, index in zip(views, train, strict=True):
        view.time = times[index]
    size = (views[0].camera.width, views[0].camera.height)
    objects = None
    if captions is not None:
        objects = object_maps(scene_dir, [scene.cameras[i].name for i in train], size)
        known = set(np.unique(np.concatenate([m.ravel() for m in objects])).tolist())
        check_objects(captions, known, str(captions_path))
    check_views_see_points(views, scene.points)
    meta_path = out / "field.json"
    meta = {
        "format": FORMAT,
        "scene": str(scene_dir.resolve()),
        "train_views": [scene.cameras[i].name for i in train],
        **model_identity(predictor),
        **segment_rule(predictor),
        "config": cfg.to_dict(),
        "time_range": list(time_range),
        "captions": None if captions_path is None else str(Path(captions_path).resolve()),
        "timings_s": {},
        "complete": False,
    }
    resume_meta(
        meta_path,
        meta,
        keys=(
            "scene",
            "model",
            "clip_fingerprint",
            "keep_novel",
            "config",
            "train_views",
            "captions",
        ),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps(meta, indent=1))

    def timed(stage, work):
        return run_stage(meta, meta_path, stage, work)

    # (a) canonical Gaussians and the deformation network on RGB across time
    cloud = GaussianCloud.from_points(scene.points, scene.colours, latent_dim=cfg.latent_dim)
    if cfg.time_slices:
        cloud = SpacetimeCloud.from_cloud(cloud, slices=cfg.time_slices)
    deformation = deformation_field(cfg, scene)
    colour = timed(
        "colour",
        lambda: fit_colour(out, cloud, views, cfg, deformation=deformation, progress=progress),
    )
    meta["colour_loss"], meta["gaussians"] = colour["loss"], len(cloud)
    frame_times = [v.time for v in views]
    cameras = [v.camera for v in views]
    # (b-d) time-agnostic language: ovseg's masks per frame, autoencoder, latents
    predictor.set_vocabulary(cfg.mask_vocabulary or default_mask_vocabulary(predictor))
    per_view = timed(
        "features",
        lambda: view_features(
            predictor,
            scene,
            train,
            cameras,
            cfg.levels,
            out / "features",
            progress,
        ),
    )
    pairs = [found["panoptic"] for found in per_view]
    autoencoder = timed(
        "autoencoder",
        lambda: scene_autoencoder(
            out, [e for _, e in pairs], [m for m, _ in pairs], cfg, progress, meta
        ),
    )
    language = timed(
        "language",
        lambda: fit_language(
            out,
            cloud,
            cameras,
            per_view,
            autoencoder,
            cfg,
            times=frame_times,
            deformation=deformation,
            progress=progress,
        ),
    )
    meta["language_loss"] = language["loss"]
    # (e-f) time-sensitive language: captions -> sentence embeddings -> status field
    status = None
    if captions is not None:
        scene_times = [scene.times[i] for i in train]
        status = timed(
            "status",
            lambda: fit_status(
                out,
                cfg,
                cloud,
                deformation,
                captions,
                objects,
                cameras,
                frame_times,
                scene_times,
                progress,
            ),
        )
    from safetensors.torch import save_file

    tensors = {name: getattr(cloud, name).detach().contiguous() for name in cloud.parameter_names}
    atomic_write(out / "gaussians.safetensors", lambda tmp: save_file(tensors, tmp))
    save_module(out / "deformation.safetensors", deformation)
    if status is not None:
        save_module(out / "status.safetensors", status)
    meta["complete"] = True
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    return meta


class DynamicField:
    """A finished 4D field folder, loaded for queries (``DynamicField.load(folder,
    predictor)``; FieldError when the folder holds no finished 4D field or was made with
    another CLIP; only the predictor's text is used: a :class:`~ovseg.predictor.TextModel`
    does). Times are in the scene's unit; ValueError outside the video."""

    def __init__(
        self, folder, meta, cloud, deformation, autoencoder, status, status_decoder, predictor
    ):
        self.folder, self.meta, self.cloud, self.deformation = folder, meta, cloud, deformation
        self.autoencoder, self.status, self.status_decoder = autoencoder, status, status_decoder
        self.predictor = predictor
        self.time_range = tuple(meta["time_range"])
        self._sentences = None
        self._canonical: dict[str, torch.Tensor] = {}

    @staticmethod
    def read_meta(folder: str | Path) -> dict:
        """field.json of a finished 4D field folder; FieldError otherwise."""
        return read_finished_meta(folder, FORMAT, "4D language field")

    @classmethod
    def load(cls, folder: str | Path, predictor) -> DynamicField:
        from ovseg.checkpoint import check_tensor_names, read_state_dict
        from ovseg.fields.folders import REFIT, load_field_module, read_field_tensors

        folder = Path(folder)
        meta = cls.read_meta(folder)
        check_same_clip(folder, meta, predictor)
        cfg = meta["config"]
        path = folder / "gaussians.safetensors"
        tensors = read_state_dict(path, hint=REFIT)
        kind = SpacetimeCloud if "time_centres" in tensors else GaussianCloud
        names = kind.parameter_names
        check_tensor_names(tensors, dict.fromkeys(names), source=str(path), hint=REFIT)
        cloud = kind(*(tensors[name] for name in names)).eval()
        deformation = DeformationField(  # its centre and extent: buffers, loaded from the file
            torch.zeros(3),
            1.0,
            position_frequencies=cfg["position_frequencies"],
            time_frequencies=cfg["time_frequencies"],
            width=cfg["deformation_width"],
            depth=cfg["deformation_depth"],
        )
        load_field_module(deformation, folder / "deformation.safetensors")
        autoencoder = load_field_module(
            LanguageAutoencoder(meta["embed_dim"], cfg["latent_dim"]),
            folder / "autoencoder.safetensors",
        )
        status = status_decoder = None
        if (folder / "status.safetensors").is_file():
            status = StatusField(
                len(cloud),
                deformation.encoding.centre,
                float(deformation.encoding.extent),
                states=cfg["status_states"],
                channels=cfg["latent_dim"],
                position_frequencies=cfg["position_frequencies"],
                time_frequencies=cfg["time_frequencies"],
            )
            load_field_module(status, folder / "status.safetensors")
            embeddings = read_field_tensors(
                folder / "caption_embeddings.safetensors", ["embeddings"]
            )["embeddings"]
            status_decoder = load_field_module(
                LanguageAutoencoder(embeddings.shape[1], cfg["latent_dim"]),
                folder / "status_autoencoder.safetensors",
            )
        return cls(folder, meta, cloud, deformation, autoencoder, status, status_decoder, predictor)

    def scene(self) -> PosedImages:
        return load_posed_images(self.meta["scene"], check_images=False)

    def normalise(self, scene_time: float) -> float:
        """A time in the scene's unit -> [0, 1]; ValueError outside the video."""
        first, last = self.time_range
        if not first <= scene_time <= last:
            raise ValueError(f"time {scene_time:g} is outside the video ({first:g} to {last:g})")
        return (scene_time - first) / (last - first)

    @torch.no_grad()
    def render(self, camera: Camera, scene_time: float) -> dict[str, torch.Tensor]:
        """``rgb`` (H, W, 3) in [0, 1], ``latent`` (H, W, L) time-agnostic, ``status`` (H, W,
        L) time-sensitive (absent without captions), ``alpha`` (H, W), at ``scene_time``."""
        t = self.normalise(scene_time)
        latents = [self.cloud.latents]
        if self.status is not None:
            latents.append(self.status(self.cloud.means, t))
        subject = deform(self.cloud, self.deformation, t, latents=torch.cat(latents, dim=1))
        rendered = render(subject, camera, what="rgb+latent")
        features, L = rendered["features"], self.cloud.latents.shape[1]
        out = {
            "rgb": features[..., :3].clamp(0, 1),
            "latent": features[..., 3 : 3 + L],
            "alpha": rendered["alpha"],
        }
        if self.status is not None:
            out["status"] = features[..., 3 + L :]
        return out

    def _clip_text(self, phrases):
        from ovseg.fields.language import CANONICAL_PHRASES

        encoder = self.predictor.text_encoder
        if "clip" not in self._canonical:
            self._canonical["clip"] = encoder.encode_texts(list(CANONICAL_PHRASES)).float().cpu()
        return encoder.encode_texts(phrases).float().cpu(), self._canonical["clip"]

    def _sentence_text(self, phrases):
        from ovseg.fields.language import CANONICAL_PHRASES
        from ovseg.fields.sentences import SentenceEncoder

        if self._sentences is None:
            self._sentences = SentenceEncoder(self.meta["config"]["sentence_model"])
            self._canonical["sentence"] = self._sentences.encode(list(CANONICAL_PHRASES))
        return self._sentences.encode(phrases), self._canonical["sentence"]

    @torch.no_grad()
    def relevancy(
        self, camera: Camera, scene_time: float, phrases: list[str], *, rendered: dict | None = None
    ) -> torch.Tensor:
        """Time-agnostic relevancy (P, H, W) in (0, 1) at ``scene_time`` (LangSplat's ratio
        against the canonical phrases on the decoded CLIP latent; > 0.5 relevant).
        ``rendered``: this camera's :meth:`render` at that time, when the caller has it (saves
        a render)."""
        from ovseg.heatmap import check_phrases

        phrases = check_phrases(phrases)
        rendered = rendered if rendered is not None else self.render(camera, scene_time)
        latent = rendered["latent"]
        return latent_relevancy(self.autoencoder, latent, *self._clip_text(phrases))

    @torch.no_grad()
    def state_similarity(self, camera: Camera, scene_time: float, phrases: list[str]):
        """Time-sensitive scores at ``scene_time``: (P, H, W) cosine of each phrase's sentence
        embedding with the decoded status feature, and (P, H, W) its relevancy against the
        canonical phrases. ValueError when the field has no captions."""
        from ovseg.heatmap import check_phrases
        from ovseg.modeling.pixel_text import relevancy

        if self.status is None:
            raise ValueError(
                f"{self.folder} was fitted without captions: it answers only time-agnostic queries"
            )
        phrases = check_phrases(phrases)
        latent = self.render(camera, scene_time)["status"]
        decoded = self.status_decoder.decode(latent.reshape(-1, latent.shape[-1]))
        text, canonical = self._sentence_text(phrases)
        cosine = (text @ decoded.T).reshape(len(phrases), *latent.shape[:2])
        scores = relevancy(decoded.T[None, :, :, None], text, canonical)[0, :, :, 0]
        return cosine, scores.reshape(len(phrases), *latent.shape[:2])

    @torch.no_grad()
    def when(
        self, camera: Camera, scene_times: list[float], phrase: str, *, margin: float = 0.05
    ) -> dict:
        """When a state holds, seen from ``camera`` at ``scene_times``.

        Per frame, the score is the 99th percentile of the phrase's cosine with the decoded
        status feature over the frame's pixels. The state holds in the frames whose score is
        nearer the best frame's than the worst frame's (a state lasts part of the video);
        when the scores differ by less than ``margin`` it holds in every frame where the
        phrase is relevant (relevancy > 0.5) or in none. Returns {"scores" (T,), "holds" (T,)
        bool, "masks" (T, H, W) bool: relevancy > 0.5 in the frames where it holds}."""
        scores, masks = [], []
        for scene_time in scene_times:
            cosine, relevant = self.state_similarity(camera, scene_time, [phrase])
            scores.append(float(torch.quantile(cosine[0].flatten(), 0.99)))
            masks.append(relevant[0] > 0.5)
        values = torch.tensor(scores)
        if float(values.max() - values.min()) >= margin:
            holds = values >= 0.5 * (values.max() + values.min())
        else:
            holds = torch.tensor([bool(m.any()) for m in masks])
        stacked = torch.stack(masks) & holds[:, None, None]
        return {"scores": values, "holds": holds, "masks": stacked}
