"""The stages of fitting a language field into a field folder, public and shared: the 3D
fit (:func:`ovseg.fields.field.fit_field`), the 4D fit
(:func:`ovseg.fields.field4d.fit_field4d`) and lifting (:func:`ovseg.fields.lift.lift_field`)
are these calls in order, each resumable from its file in the folder::

    load_views, check_views_see_points       the training views, checked against the points
    (a) fit_colour        colour.pt            colours and geometry (4D: with the
                                               deformation_field, over time)
    (b) view_features     features/VIEW.npz    each view's masks and their CLIP embeddings
    (c) scene_autoencoder autoencoder.safetensors   CLIP dim <-> latent
    (d) fit_language      language.pt          the latents on the frozen geometry
    (e-f) fit_status      status.pt, ...       4D: captions -> sentence embeddings -> the
                                               status field (time-sensitive latents)

with the bookkeeping of field.json (:func:`resume_meta`, :func:`run_stage`). The optimisation
loops themselves are :func:`ovseg.fields.fit.fit_rgb` and :func:`~ovseg.fields.fit.fit_latents`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ovseg.fields.captions import caption_at
from ovseg.fields.deform import DeformationField, StatusField
from ovseg.fields.fit import View, fit_latents, fit_rgb, scene_extent
from ovseg.fields.folders import FieldError, load_field_module, read_field_tensors
from ovseg.fields.language import LanguageAutoencoder, train_autoencoder
from ovseg.fields.posed_images import PosedImages, view_file_stem
from ovseg.fileio import atomic_write, write_text_atomic

if TYPE_CHECKING:
    from ovseg.fields.field import FieldConfig
    from ovseg.fields.field4d import Field4DConfig


# ---------------------------------------------------------------------------- bookkeeping
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
    keys=("scene", "model", "clip_fingerprint", "keep_novel", "config", "train_views"),
) -> None:
    """Carry a previous run's timings into ``meta``; FieldError when that run was made from
    another scene, model or settings (any of ``keys`` differs)."""
    if not meta_path.is_file():
        return
    previous = json.loads(meta_path.read_text())
    for key in keys:
        if previous.get(key) != meta.get(key):  # a key absent from both: the default
            raise FieldError(
                f"{meta_path.parent} holds a field made with another {key.replace('_', ' ')}; "
                "choose a new --out folder or delete this one"
            )
    meta["timings_s"] = previous.get("timings_s", {})
    if "autoencoder_cosine" in previous:  # measured when the autoencoder was trained
        meta["autoencoder_cosine"] = previous["autoencoder_cosine"]


# ---------------------------------------------------------------------------- views
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


def check_views_see_points(views: list[View], points: torch.Tensor) -> None:
    """ValueError naming the first view whose camera sees none of ``points`` (N, 3) (a wrong
    pose, or one in another frame), before anything is fitted."""
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


def object_maps(scene_dir: Path, names: list[str], size: tuple[int, int]) -> list[np.ndarray]:
    """Each frame's object-id map (``segments/FRAME.png``) at ``size`` (W, H)."""
    from PIL import Image

    maps = []
    for name in names:
        path = scene_dir / "segments" / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: captions need each training frame's object-id map in "
                "segments/FRAME.png (uint8 or uint16 ids, as the captions file names them)"
            )
        with Image.open(path) as image:
            if image.size != size:
                image = image.resize(size, Image.NEAREST)
            maps.append(np.asarray(image).astype(np.int64))
    return maps


# ---------------------------------------------------------------------------- (a) colour
def fit_colour(
    out: Path,
    cloud,
    views: list[View],
    cfg,
    *,
    deformation: DeformationField | None = None,
    progress: bool = True,
) -> dict:
    """Stage (a): ``cloud``'s colours and geometry fitted to ``views``
    (:func:`~ovseg.fields.fit.fit_rgb` with ``cfg.colour``, and a 4D config's
    ``cfg.deformation``), resumable from ``out/colour.pt``; a 4D fit moves the cloud with
    ``deformation`` (:func:`deformation_field`)."""
    return fit_rgb(
        cloud,
        views,
        cfg.colour,
        checkpoint=out / "colour.pt",
        progress=progress,
        deformation=deformation,
        deformation_cfg=getattr(cfg, "deformation", None),
    )


def deformation_field(cfg: Field4DConfig, scene: PosedImages) -> DeformationField:
    """A 4D fit's deformation network, initialised from ``cfg.colour.seed``, its encoding
    centred on the scene's points and scaled by its cameras' extent."""
    centre = scene.points.float().mean(0)
    extent = scene_extent(scene.cameras)
    torch.manual_seed(cfg.colour.seed)
    return DeformationField(
        centre,
        extent,
        position_frequencies=cfg.position_frequencies,
        time_frequencies=cfg.time_frequencies,
        width=cfg.deformation_width,
        depth=cfg.deformation_depth,
    )


# ---------------------------------------------------------------------------- (b) features
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


# ---------------------------------------------------------------------------- (c) autoencoder
def scene_autoencoder(
    out: Path, embeddings, segment_maps, cfg: FieldConfig, progress: bool, meta: dict
):
    """The scene's CLIP autoencoder (trained once, then loaded from ``out``); a fresh one's
    reconstruction quality goes into ``meta``."""
    from safetensors.torch import save_file

    path = out / "autoencoder.safetensors"
    dim = next((e.shape[1] for e in embeddings if len(e)), None)
    if dim is None:
        raise ValueError("no view gave a segment: nothing to ground language on")
    model = LanguageAutoencoder(dim, cfg.latent_dim)
    if path.is_file():
        return load_field_module(model, path, hint="delete it to train it again")
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


# ---------------------------------------------------------------------------- (d) language
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


def fit_language(
    out: Path,
    cloud,
    cameras,
    per_view,
    autoencoder,
    cfg,
    *,
    times: list[float] | None = None,
    deformation: DeformationField | None = None,
    progress: bool = True,
) -> dict:
    """Stage (d): the latents of ``cloud`` on its frozen geometry (``deformation``'s at each
    view's time, for a 4D field), fitted so each of ``cameras`` renders its view's encoded
    segment embeddings (:func:`latent_targets` of ``per_view``, from :func:`view_features`);
    resumable from ``out/language.pt``."""
    targets, valid = latent_targets(per_view, autoencoder, cfg.levels, cfg.latent_dim)
    return fit_latents(
        cloud,
        cameras,
        targets,
        valid,
        cfg.language,
        checkpoint=out / "language.pt",
        progress=progress,
        times=times,
        deformation=deformation,
    )


# ---------------------------------------------------------------------------- (e-f) status
def status_field(cfg: Field4DConfig, count: int, deformation: DeformationField) -> StatusField:
    """A 4D fit's status field for ``count`` Gaussians (initialised from
    ``cfg.status.seed``), encoding positions as ``deformation`` does."""
    torch.manual_seed(cfg.status.seed)
    encoding = deformation.encoding
    return StatusField(
        count,
        encoding.centre,
        float(encoding.extent),
        states=cfg.status_states,
        channels=cfg.latent_dim,
        position_frequencies=cfg.position_frequencies,
        time_frequencies=cfg.time_frequencies,
    )


def save_module(path: Path, module: torch.nn.Module) -> None:
    """``module``'s weights as a safetensors file, atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp))


def fit_status(
    out, cfg, cloud, deformation, captions, objects, cameras, times, scene_times, progress
):
    """Stages (e-f) of a 4D field with captions: the captions' sentence embeddings
    (``out/caption_embeddings.safetensors``) and their autoencoder
    (``status_autoencoder.safetensors``), per frame the caption of each pixel's object at its
    time (``objects``: the frames' :func:`object_maps`, ``scene_times`` their times in the
    scene's unit), and the :func:`status_field` fitted to them on the frozen geometry
    (``out/status.pt``; ``times`` normalised). Returns the status field."""
    from safetensors.torch import save_file

    from ovseg.fields.sentences import SentenceEncoder

    texts = sorted({span.caption for spans in captions.values() for span in spans})
    embeddings_path = out / "caption_embeddings.safetensors"
    again = "delete it to compute it again"
    if embeddings_path.is_file():
        embeddings = read_field_tensors(embeddings_path, ["embeddings"], hint=again)["embeddings"]
    else:
        embeddings = SentenceEncoder(cfg.sentence_model).encode(texts)
        tensors = {"embeddings": embeddings.contiguous()}
        atomic_write(embeddings_path, lambda tmp: save_file(tensors, tmp))
    write_text_atomic(out / "captions.json", json.dumps({"texts": texts}, indent=1))
    # per frame: each pixel's caption index (-1: no object, or no state at that time)
    caption_maps, areas = [], torch.zeros(len(texts))
    for object_map, scene_time in zip(objects, scene_times, strict=True):
        indices = np.full(object_map.shape, -1, np.int64)
        for object_id, spans in captions.items():
            caption = caption_at(spans, scene_time)
            if caption is not None:
                indices[object_map == object_id] = texts.index(caption)
        caption_maps.append(indices)
        areas += torch.from_numpy(np.bincount(indices[indices >= 0], minlength=len(texts)))
    autoencoder_path = out / "status_autoencoder.safetensors"
    if autoencoder_path.is_file():
        autoencoder = load_field_module(
            LanguageAutoencoder(embeddings.shape[1], cfg.latent_dim), autoencoder_path, hint=again
        )
    else:
        present = areas > 0
        if not bool(present.any()):
            raise ValueError("no training frame shows a captioned object at a captioned time")
        autoencoder, _ = train_autoencoder(
            embeddings[present],
            areas[present],
            latent_dim=cfg.latent_dim,
            iterations=cfg.autoencoder_iterations,
            progress=progress,
        )
        save_module(autoencoder_path, autoencoder)
    autoencoder.eval()
    targets, valid = [], []
    with torch.no_grad():
        latents = autoencoder.encode(embeddings)
        for indices in caption_maps:
            covered = torch.from_numpy(indices >= 0)
            target = torch.zeros(*indices.shape, cfg.latent_dim)
            target[covered] = latents[torch.from_numpy(indices[indices >= 0])]
            targets.append(target)
            valid.append(covered)
    status = status_field(cfg, len(cloud), deformation)
    fit_latents(
        cloud,
        cameras,
        targets,
        valid,
        cfg.status,
        checkpoint=out / "status.pt",
        progress=progress,
        times=times,
        deformation=deformation,
        status=status,
    )
    return status
