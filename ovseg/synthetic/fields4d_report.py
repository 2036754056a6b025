"""The numbers of the 4D language fields in the synthetic 4D world: per scene, a 4D field and,
for comparison, a static 3D field fitted on the same training frames (times ignored); both
scored on held-out frames (held-out cameras at every time, training cameras at held-out
times) next to ovseg run on each frame directly (2D).

- **Time-agnostic** (each class present in a held-out frame, its name as the query): IoU of
  relevancy > 0.5 with the class's true mask in that frame, mean over (frame, class) pairs.
- **Time-sensitive** (each state caption of each thing, from each held-out camera over all
  time steps): per frame a score, the state held where the score is nearer the video's best
  frame than its worst (:meth:`ovseg.fields.field4d.DynamicField.when`'s rule, the same for
  every method); against the truth (the caption holds and the thing is visible): frame
  accuracy, temporal IoU of the predicted and true frame sets, and the mask IoU inside the
  true span (the predicted mask is empty where the method says the state does not hold).
  The 4D field scores with its status feature and the sentence encoder; the 2D and 3D
  baselines with CLIP (the synthetic CLIP read captions with colours in training).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from ovseg.synthetic.fields_report import (
    MIN_PIXELS,
    relevancy_of_embeddings,
    segment_embedding_map,
)

METHODS = ("4d field", "3d field", "2d masks")


def _truth(scene_dir: Path, name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(scene_dir / "segments" / f"{name}.png"))


def _iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    union = (predicted | truth).sum()
    return float((predicted & truth).sum() / union) if union else 0.0


def _frames_of(posed, camera_id: str) -> list[int]:
    """The camera's frames over all times (train and test), in time order."""
    frames = [i for i, c in enumerate(posed.camera_ids) if c == camera_id]
    return sorted(frames, key=lambda i: posed.times[i])


def _clip_when(scores: list[float], relevant: list[np.ndarray], margin: float = 0.05):
    """The same decision rule as DynamicField.when, on per-frame scores."""
    values = torch.tensor(scores)
    if float(values.max() - values.min()) >= margin:
        return (values >= 0.5 * (values.max() + values.min())).tolist()
    return [bool(m.any()) for m in relevant]


def score_scene(field4d, field3d, predictor, scene_dir: Path, vocabulary, seen) -> dict:
    """Time-agnostic pairs and time-sensitive records of one scene, per method."""
    from PIL import Image

    from ovseg.fields.captions import caption_at, read_captions
    from ovseg.fields.language import CANONICAL_PHRASES, view_segments
    from ovseg.synthetic.world4d import category_at

    meta = json.loads((scene_dir / "scene.json").read_text())
    objects = {o["id"]: o for o in meta["objects"]}
    posed = field4d.scene()
    encoder = predictor.text_encoder
    canonical = encoder.encode_texts(list(CANONICAL_PHRASES)).float().cpu()
    agnostic = {m: [] for m in METHODS}
    segments_cache: dict[int, tuple] = {}

    def two_d(index):  # ovseg on the true frame: segments and their CLIP embeddings
        if index not in segments_cache:
            image = np.asarray(Image.open(posed.image_paths[index]).convert("RGB"))
            segment_map, embeddings = view_segments(predictor, image)
            segments_cache[index] = segment_embedding_map(segment_map, embeddings)
        return segments_cache[index]

    psnr = {"4d field": [], "3d field": []}
    for index in posed.split("test"):
        camera, t = posed.cameras[index], posed.times[index]
        truth = _truth(scene_dir, camera.name)
        image = np.asarray(Image.open(posed.image_paths[index]).convert("RGB")) / 255.0
        classes = {}
        for object_id in np.unique(truth):
            thing = objects[int(object_id)]
            category = category_at(thing, t) if thing["isthing"] else thing["category"]
            classes.setdefault(category, []).append(int(object_id))
        present = sorted(classes)
        with torch.no_grad():  # one render per field serves PSNR and relevancy
            rendered4d = field4d.render(camera, t)
            answer3d = field3d.relevancy(camera, present)
            maps = {
                "4d field": field4d.relevancy(camera, t, present, rendered=rendered4d),
                "3d field": answer3d["relevancy"],
            }
            psnr["4d field"].append(_psnr(rendered4d["rgb"].numpy(), image))
            psnr["3d field"].append(_psnr(answer3d["rgb"].numpy(), image))
            text = encoder.encode_texts(present).float().cpu()
            maps["2d masks"] = relevancy_of_embeddings(two_d(index), text, canonical)
        for number, category in enumerate(present):
            gt = np.isin(truth, classes[category])
            if gt.sum() < MIN_PIXELS:
                continue
            for method in METHODS:
                iou = _iou(maps[method][number].numpy() > 0.5, gt)
                agnostic[method].append((category, iou))
    captions = read_captions(scene_dir / "captions.json")
    first, count = meta["train_cameras"], meta["test_cameras"]
    held_out_cameras = [f"c{k:02d}" for k in range(first, first + count)]
    sensitive = {m: [] for m in METHODS}
    for camera_id in held_out_cameras:
        frames = _frames_of(posed, camera_id)
        camera = posed.cameras[frames[0]]
        times = [posed.times[i] for i in frames]
        truths = [_truth(scene_dir, posed.cameras[i].name) for i in frames]
        for object_id, spans in captions.items():
            if not objects[object_id]["isthing"]:
                continue  # a ground region's one state is not a time-sensitive query
            visible = [(m == object_id).sum() >= MIN_PIXELS for m in truths]
            for span in spans:
                holds = [
                    v and caption_at(spans, t) == span.caption
                    for v, t in zip(visible, times, strict=True)
                ]
                if not any(holds):
                    continue
                answers = {"4d field": field4d.when(camera, times, span.caption)}
                text = encoder.encode_texts([span.caption]).float().cpu()
                with torch.no_grad():  # static: one render serves every time
                    latent = field3d.level_latents(field3d.render(camera)["latent"], 0)
                    static_map = field3d.autoencoder.decode(latent)
                for method in ("3d field", "2d masks"):
                    scores, masks = [], []
                    for i in frames:
                        embedding_map = static_map if method == "3d field" else two_d(i)
                        cosine = embedding_map @ text[0]
                        scores.append(float(torch.quantile(cosine.flatten(), 0.99)))
                        relevant = relevancy_of_embeddings(embedding_map, text, canonical)[0]
                        masks.append(relevant.numpy() > 0.5)
                    answers[method] = {"holds": _clip_when(scores, masks), "masks": masks}
                for method, answer in answers.items():
                    predicted = [bool(h) for h in answer["holds"]]
                    masks = [np.asarray(m) for m in answer["masks"]]
                    both = sum(p and h for p, h in zip(predicted, holds, strict=True))
                    either = sum(p or h for p, h in zip(predicted, holds, strict=True))
                    inside = [
                        _iou(mask & p, truth == object_id)
                        for mask, p, h, truth in zip(masks, predicted, holds, truths, strict=True)
                        if h
                    ]
                    sensitive[method].append(
                        {
                            "caption": span.caption,
                            "camera": camera_id,
                            "frame_accuracy": float(
                                np.mean([p == h for p, h in zip(predicted, holds, strict=True)])
                            ),
                            "temporal_iou": both / either if either else 0.0,
                            "iou_inside": float(np.mean(inside)),
                            "novel": not seen.get(objects[object_id]["category_from"], True),
                        }
                    )
    return {"agnostic": agnostic, "sensitive": sensitive, "psnr": psnr}


def _psnr(image: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two (H, W, 3) images in [0, 1]."""
    return float(-10 * np.log10(max(float(np.mean((image - truth) ** 2)), 1e-10)))


def summarise(records: dict, seen: dict[str, bool]) -> dict:
    out = {}
    for method in METHODS:
        pairs = records["agnostic"][method]
        row = {}
        for split in ("base", "novel", "all"):
            values = [
                iou for c, iou in pairs if split == "all" or seen.get(c, False) == (split == "base")
            ]
            row[f"mIoU_{split}"] = 100 * float(np.mean(values)) if values else float("nan")
        sensitive = records["sensitive"][method]
        for key in ("frame_accuracy", "temporal_iou", "iou_inside"):
            values = [r[key] for r in sensitive]
            row[key] = 100 * float(np.mean(values)) if values else float("nan")
        row["pairs"], row["queries"] = len(pairs), len(sensitive)
        psnr = records.get("psnr", {}).get(method, [])
        row["psnr"] = float(np.mean(psnr)) if psnr else float("nan")
        out[method] = row
    return out


def figure_queries(scene_dir: Path) -> tuple[str, str]:
    """The figure's queries: the first later state of a thing that changes (its caption) and
    that thing's class at the start (a time-agnostic phrase that holds until it changes)."""
    from ovseg.fields.captions import read_captions
    from ovseg.synthetic.world4d import category_at

    objects = {o["id"]: o for o in json.loads((scene_dir / "scene.json").read_text())["objects"]}
    captions = read_captions(scene_dir / "captions.json")
    object_id, spans = next((k, v) for k, v in captions.items() if len(v) > 1)
    return spans[1].caption, category_at(objects[object_id], 0.0)


def figure(field4d, scene_dir: Path, out: Path, state: str, phrase: str) -> None:
    """A held-out camera at three times: the true frame, the 4D render, the time-agnostic
    heat map of ``phrase`` and the time-sensitive mask of ``state``."""
    from PIL import Image

    from ovseg.fileio import atomic_write
    from ovseg.synthetic.fields_report import captioned
    from ovseg.visualize import draw_heatmap, mask_overlay

    posed = field4d.scene()
    meta = json.loads((scene_dir / "scene.json").read_text())
    frames = _frames_of(posed, f"c{meta['train_cameras']:02d}")
    picks = [frames[0], frames[len(frames) // 2], frames[-1]]
    times = [posed.times[i] for i in frames]
    answer = field4d.when(posed.cameras[frames[0]], times, state)
    rows = []
    for index in picks:
        camera, t = posed.cameras[index], posed.times[index]
        truth = np.asarray(Image.open(posed.image_paths[index]).convert("RGB"))
        render = (field4d.render(camera, t)["rgb"].numpy() * 255).round().astype(np.uint8)
        heat = field4d.relevancy(camera, t, [phrase])[0].numpy()
        position = frames.index(index)
        holds = bool(answer["holds"][position])
        mask = answer["masks"][position].numpy()
        panels = [
            captioned(truth, f"truth t={t:.2f}"),
            captioned(render, "4D render"),
            draw_heatmap(render, heat, phrase, note="time-agnostic"),
            Image.fromarray(mask_overlay(render, mask, "holds" if holds else "not now")),
        ]
        rows.append(panels)
    width = sum(p.width for p in rows[0]) + 8 * 3
    height = sum(max(p.height for p in row) for row in rows) + 8 * 2 + 16
    canvas = Image.new("RGB", (width, height), "white")
    from PIL import ImageDraw

    ImageDraw.Draw(canvas).text(
        (2, 2), f"time-sensitive query (4th column, red): '{state}'", fill=(0, 0, 0)
    )
    y = 16
    for row in rows:
        x = 0
        for panel in row:
            canvas.paste(panel, (x, y))
            x += panel.width + 8
        y += max(p.height for p in row) + 8
    canvas = canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST)
    atomic_write(out, lambda tmp: canvas.save(tmp, format="PNG"))


def run_scene(
    out: str | Path,
    index: int,
    *,
    seed: int = 0,
    cfg=None,
    cfg3d=None,
    world: dict | None = None,
    progress: bool = True,
) -> dict:
    """Scene ``index``: its world, 4D and 3D fits (resumable), scores and timings ->
    OUT/scores/scene_K.json (the figure too for scene 0); returns that record. A record made
    with the same settings is read back, not recomputed, so scenes can run in separate
    processes (or machines sharing OUT) and :func:`run` then only gathers them."""
    from ovseg.fields.field import FieldConfig, LanguageField, fit_field
    from ovseg.fields.field4d import DynamicField, Field4DConfig, fit_field4d
    from ovseg.fileio import write_text_atomic
    from ovseg.predictor import OVSegPredictor
    from ovseg.synthetic.world4d import write_scene4d

    out = Path(out)
    cfg, cfg3d = cfg or Field4DConfig(), cfg3d or FieldConfig()
    settings = {
        "seed": seed,
        "world": world or {},
        "fields4d": cfg.to_dict(),
        "fields3d": cfg3d.to_dict(),
    }
    name = f"scene_{index:03d}"
    scene_dir, path = out / "world" / name, out / "scores" / f"{name}.json"
    if path.is_file():
        record = json.loads(path.read_text())
        # scene 0 also draws the figure: redone when the figure is missing
        if record["settings"] == settings and (index or (out / "figure.png").is_file()):
            return record
    predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
    vocabulary = predictor.set_vocabulary("synthetic_world")
    base = {n.casefold() for n in predictor.train_vocabulary.names}
    seen = {name: name.casefold() in base for name in vocabulary.names}
    if not (scene_dir / "scene.json").is_file():
        write_scene4d(scene_dir, seed, index, progress=progress, **(world or {}))
    folder4d, folder3d = out / "fields4d" / name, out / "fields3d" / name
    fit4d = fit_field4d(scene_dir, folder4d, predictor, cfg, progress=progress)
    fit3d = fit_field(scene_dir, folder3d, predictor, cfg3d, progress=progress)
    field4d = DynamicField.load(folder4d, predictor)
    field3d = LanguageField.load(folder3d, predictor)
    predictor.set_vocabulary("synthetic_world")
    records = score_scene(field4d, field3d, predictor, scene_dir, vocabulary, seen)
    posed = field4d.scene()
    camera = posed.cameras[posed.split("test")[0]]
    field4d.render(camera, 0.5)
    start = time.perf_counter()
    for t in np.linspace(0, 1, 5):
        field4d.render(camera, float(t))
    record = {
        "settings": settings,
        "records": records,
        "seen": seen,
        "fit4d_timings_s": fit4d["timings_s"],
        "fit3d_timings_s": fit3d["timings_s"],
        "gaussians": fit4d["gaussians"],
        "render_frame_seconds": (time.perf_counter() - start) / 5,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }
    if index == 0:
        figure(field4d, scene_dir, out / "figure.png", *figure_queries(scene_dir))
    write_text_atomic(path, json.dumps(record))
    return record


def run(
    out: str | Path,
    *,
    scenes: int = 1,
    seed: int = 0,
    cfg=None,
    cfg3d=None,
    world: dict | None = None,
    progress: bool = True,
) -> dict:
    """Scenes 0 .. ``scenes`` - 1 (:func:`run_scene`, each resumable) gathered ->
    OUT/report.json, report.md, figure.png (scene 0); returns the report."""
    from ovseg.fileio import write_text_atomic

    out = Path(out)
    scene_records = [
        run_scene(out, index, seed=seed, cfg=cfg, cfg3d=cfg3d, world=world, progress=progress)
        for index in range(scenes)
    ]
    seen = scene_records[0]["seen"]
    records = {part: {m: [] for m in METHODS} for part in ("agnostic", "sensitive", "psnr")}
    for scene in scene_records:
        for part in records:
            for method in METHODS:
                records[part][method] += scene["records"][part].get(method, [])
    stages = scene_records[0]["fit4d_timings_s"]
    report = {
        "scenes": scenes,
        "summary": summarise(records, seen),
        "fit4d_minutes": [sum(r["fit4d_timings_s"].values()) / 60 for r in scene_records],
        "fit4d_stage_minutes": {
            k: float(np.mean([r["fit4d_timings_s"][k] for r in scene_records])) / 60 for k in stages
        },
        "fit3d_minutes": [sum(r["fit3d_timings_s"].values()) / 60 for r in scene_records],
        "gaussians": [r["gaussians"] for r in scene_records],
        "render_frame_seconds": float(np.mean([r["render_frame_seconds"] for r in scene_records])),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in scene_records),
        "threads": max(r["threads"] for r in scene_records),
        "novel_classes": sorted(n for n, s in seen.items() if not s),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1))
    write_text_atomic(out / "report.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        f"{report['scenes']} scene(s); novel classes: {', '.join(report['novel_classes'])}",
        "",
        "| method | time-agnostic mIoU base | novel | all | time-sensitive frame accuracy | "
        "temporal IoU | mIoU inside the span | held-out PSNR (dB) | pairs / queries |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in report["summary"].items():
        psnr = row.get("psnr", float("nan"))
        psnr = "-" if np.isnan(psnr) else f"{psnr:.2f}"
        lines.append(
            f"| {method} | {row['mIoU_base']:.1f} | {row['mIoU_novel']:.1f} | "
            f"{row['mIoU_all']:.1f} | {row['frame_accuracy']:.1f} | {row['temporal_iou']:.1f} | "
            f"{row['iou_inside']:.1f} | {psnr} | {row['pairs']} / {row['queries']} |"
        )
    stages = ", ".join(f"{k} {v:.1f}" for k, v in report["fit4d_stage_minutes"].items())
    lines += [
        "",
        f"4D fit: {np.mean(report['fit4d_minutes']):.1f} min per scene ({stages} min), "
        f"{int(np.mean(report['gaussians']))} Gaussians; 3D fit "
        f"{np.mean(report['fit3d_minutes']):.1f} min; render of a frame (deformation + RGB + "
        f"both latents) {report['render_frame_seconds'] * 1000:.0f} ms; peak RSS "
        f"{report['peak_rss_mib']:.0f} MiB; {report['threads']} threads.",
    ]
    return "\n".join(lines) + "\n"
