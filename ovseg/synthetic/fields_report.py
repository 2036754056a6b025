"""The numbers of the 3D language fields in the synthetic 3D world: fit a field per scene,
then on each held-out view score every class present (its name as the query) for the field
and for ovseg run directly on that view (the 2D baselines), and time it.

Per (held-out view, class present with >= ``MIN_PIXELS`` pixels):

- **localisation** (things): the relevancy argmax pixel falls inside the class's ground-truth
  box in that view (LangSplat / LERF's localisation accuracy);
- **IoU** of relevancy > 0.5 with the class's ground-truth mask (mean over pairs: "mIoU");
- **multi-view consistency** (things): per object and view, the label is the vocabulary class
  whose text is closest to the mean embedding over the object's pixels; consistency is the
  share of (object, view) labels equal to that object's most frequent one, accuracy the share
  equal to its true class.

Methods: ``field`` (rendered latent, decoded), ``2d masks`` (each pixel gets its panoptic
segment's mask-pooled CLIP embedding: what the field learns from, run on the held-out image
itself) and ``2d dense`` (the frozen CLIP's per-location embeddings, ``predictor.heatmap``).
Base / novel follow the model's training vocabulary.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

MIN_PIXELS = 20
METHODS = ("field", "2d masks", "2d dense")


def segment_embedding_map(segment_map: np.ndarray, embeddings: torch.Tensor) -> torch.Tensor:
    """(H, W, D): each pixel its segment's embedding, zeros where void."""
    out = torch.zeros(*segment_map.shape, embeddings.shape[1] if len(embeddings) else 1)
    if len(embeddings):
        valid = torch.from_numpy(segment_map >= 0)
        out[valid] = embeddings[torch.from_numpy(segment_map[segment_map >= 0])]
    return out


def relevancy_of_embeddings(embedding_map, phrase_embeddings, canonical) -> torch.Tensor:
    from ovseg.modeling.pixel_text import relevancy

    pixels = embedding_map.permute(2, 0, 1)[None]
    return relevancy(pixels, phrase_embeddings, canonical)[0]


def score_scene(field, predictor, scene_dir: Path, vocabulary, seen: dict[str, bool]) -> dict:
    """Every held-out view of one scene: per method, lists of per-pair localisation hits,
    IoUs and per-object labels, tagged base / novel."""
    from PIL import Image

    from ovseg.fields.language import CANONICAL_PHRASES, view_segments

    meta = json.loads((scene_dir / "scene.json").read_text())
    segments = meta["segments"]
    posed = field.scene()
    encoder = predictor.text_encoder
    names = list(vocabulary.names)
    class_text = encoder.encode_texts(names).float().cpu()
    canonical = encoder.encode_texts(list(CANONICAL_PHRASES)).float().cpu()
    records = {m: {"loc": [], "iou": [], "labels": []} for m in METHODS}
    for index in posed.split("test"):
        camera = posed.cameras[index]
        truth = np.asarray(Image.open(scene_dir / "segments" / f"{camera.name}.png"))
        image = np.asarray(Image.open(posed.image_paths[index]).convert("RGB"))
        present = sorted({segments[s]["category"] for s in np.unique(truth)})
        with torch.no_grad():
            queried = field.relevancy(camera, present)
            # labels from the first mask level (the panoptic segments by default)
            field_scores = field.class_scores(camera, class_text)
        segment_map, embeddings = view_segments(predictor, image)
        mask_embeddings = segment_embedding_map(segment_map, embeddings)
        dense = torch.from_numpy(predictor.heatmap(image, present))
        for number, category in enumerate(present):
            gt = np.isin(truth, [s["id"] for s in segments if s["category"] == category])
            if gt.sum() < MIN_PIXELS:
                continue
            text = class_text[names.index(category)][None]
            maps = {
                "field": queried["relevancy"][number],
                "2d masks": relevancy_of_embeddings(mask_embeddings, text, canonical)[0],
                "2d dense": dense[number],
            }
            is_thing = any(s["isthing"] for s in segments if s["category"] == category)
            rows, cols = np.nonzero(gt)
            for method, scores in maps.items():
                scores = scores.numpy()
                predicted = scores > 0.5
                union = (predicted | gt).sum()
                iou = float((predicted & gt).sum() / union) if union else 0.0
                records[method]["iou"].append((category, iou))
                if is_thing:
                    r, c = np.unravel_index(int(np.argmax(scores)), scores.shape)
                    inside = rows.min() <= r <= rows.max() and cols.min() <= c <= cols.max()
                    records[method]["loc"].append((category, bool(inside)))
        for segment in segments:
            if not segment["isthing"]:
                continue
            pixels = torch.from_numpy(truth == segment["id"])
            if int(pixels.sum()) < MIN_PIXELS:
                continue
            for method, scores in (
                ("field", field_scores),
                ("2d masks", mask_embeddings @ class_text.T),
            ):
                label = names[int(scores[pixels].mean(0).argmax())]
                records[method]["labels"].append(
                    (f"{meta['index']}:{segment['id']}", segment["category"], label)
                )
    return records


def summarise(records: dict, seen: dict[str, bool]) -> dict:
    """Per method and split (base / novel / all): localisation %, mIoU %, consistency %,
    label accuracy %, and the number of pairs."""
    summary = {}
    for method, record in records.items():
        summary[method] = {}
        for split in ("base", "novel", "all"):

            def keep(category, split=split):
                return split == "all" or seen.get(category, False) == (split == "base")

            loc = [hit for c, hit in record["loc"] if keep(c)]
            iou = [value for c, value in record["iou"] if keep(c)]
            labels = [(obj, truth, label) for obj, truth, label in record["labels"] if keep(truth)]
            by_object: dict[str, list[str]] = {}
            for obj, _, label in labels:
                by_object.setdefault(obj, []).append(label)
            consistent = sum(
                max(values.count(v) for v in set(values)) for values in by_object.values()
            )
            summary[method][split] = {
                "localisation": 100 * float(np.mean(loc)) if loc else float("nan"),
                "mIoU": 100 * float(np.mean(iou)) if iou else float("nan"),
                "consistency": 100 * consistent / len(labels) if labels else float("nan"),
                "label_accuracy": 100 * float(np.mean([t == lab for _, t, lab in labels]))
                if labels
                else float("nan"),
                "pairs": len(iou),
            }
    return summary


def render_timing(field, *, size: int = 256, repeats: int = 5) -> float:
    """Seconds per no-grad render of a size x size view (the first held-out camera's pose)."""
    from ovseg.fields.camera import Camera

    posed = field.scene()
    base = posed.cameras[posed.split("test")[0]]
    scale = size / base.width
    camera = Camera(
        base.world_to_camera, base.fx * scale, base.fy * scale, size / 2, size / 2, size, size
    )
    field.render(camera)
    start = time.perf_counter()
    for _ in range(repeats):
        field.render(camera)
    return (time.perf_counter() - start) / repeats


# Peak RSS is read from /proc/self/status (VmHWM: this process's own high-water mark), not
# getrusage: Linux carries ru_maxrss over fork and exec, so a probe started by a large
# process would report its parent's peak.
_PROBE = """
import sys, time, torch
from ovseg.fields.camera import Camera, look_at
from ovseg.fields.gaussians import GaussianCloud
from ovseg.fields.rasterizer import render

def peak_mib():
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

torch.set_num_threads(int(sys.argv[3]))
torch.manual_seed(0)
count, size = int(sys.argv[1]), int(sys.argv[2])
points = (torch.rand(count, 3) - 0.5) * torch.tensor([3.0, 3.0, 0.4])
cloud = GaussianCloud.from_points(points, torch.rand(count, 3), opacity=0.5)
camera = Camera(look_at((0.0, -1.0, 2.6), (0.0, 0.0, 0.0)), size, size, size / 2, size / 2,
                size, size)
before = peak_mib()
start = time.perf_counter()
with torch.no_grad():
    render(cloud, camera)
forward = time.perf_counter() - start
forward_rss = peak_mib()
start = time.perf_counter()
render(cloud, camera)["features"].sum().backward()
both = time.perf_counter() - start
after = peak_mib()
print(forward, both, before, forward_rss, after)
"""


def memory_probe(count: int = 50_000, size: int = 256) -> dict:
    """Render ``count`` random Gaussians at size x size in a fresh process with the caller's
    thread count: seconds for a forward pass and for forward + backward, and that process's
    peak RSS (MiB) before, after the forward pass and after the backward pass."""
    import subprocess
    import sys

    threads = str(torch.get_num_threads())  # the caller's, as the rest of the report
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(count), str(size), threads],
        capture_output=True,
        text=True,
        check=True,
    )
    forward, both, before, forward_rss, after = map(float, done.stdout.split()[-5:])
    return {
        "gaussians": count,
        "size": size,
        "forward_s": forward,
        "forward_backward_s": both,
        "rss_start_mib": before,
        "rss_forward_mib": forward_rss,
        "rss_backward_mib": after,
    }


def figure(field, predictor, scene_dir: Path, phrase: str, out: Path) -> None:
    """A novel (held-out) view: the true image, the field's render, the field's heat map of
    ``phrase`` and ovseg's 2D heat map on the true image, side by side."""
    from PIL import Image, ImageDraw

    from ovseg.visualize import draw_heatmap

    posed = field.scene()
    index = posed.split("test")[0]
    camera = posed.cameras[index]
    truth = np.asarray(Image.open(posed.image_paths[index]).convert("RGB"))
    result = field.relevancy(camera, [phrase])
    render = (result["rgb"].numpy() * 255).round().astype(np.uint8)
    panels = [
        captioned(truth, "held-out view (truth)"),
        captioned(render, "field render"),
        draw_heatmap(render, result["relevancy"][0].numpy(), phrase, note="3D field"),
        draw_heatmap(truth, predictor.heatmap(truth, [phrase])[0], phrase, note="2D, same view"),
    ]
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 8 * 3, height), "white")
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + 8
    ImageDraw.Draw(canvas)
    scale = 2
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    from ovseg.fileio import atomic_write

    atomic_write(out, lambda tmp: canvas.save(tmp, format="PNG"))


def captioned(array: np.ndarray, caption: str):
    from PIL import Image, ImageDraw

    image = Image.fromarray(array)
    canvas = Image.new("RGB", (image.width, image.height + 14), "white")
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text((2, image.height + 1), caption, fill=(0, 0, 0))
    return canvas


def run(
    out: str | Path,
    *,
    scenes: int = 3,
    seed: int = 0,
    cfg=None,
    train_views: int = 24,
    test_views: int = 6,
    query: str = "water",
    progress: bool = True,
) -> dict:
    """World, fits (resumable), scores, timings -> OUT/report.json, OUT/report.md and
    OUT/figure.png; returns the report."""
    from ovseg.fields.field import FieldConfig, LanguageField, fit_field
    from ovseg.fileio import write_text_atomic
    from ovseg.predictor import OVSegPredictor
    from ovseg.synthetic.world3d import write_scene3d

    out = Path(out)
    cfg = cfg or FieldConfig()
    predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
    vocabulary = predictor.set_vocabulary("synthetic_world")
    base = {n.casefold() for n in predictor.train_vocabulary.names}
    seen = {name: name.casefold() in base for name in vocabulary.names}
    all_records = {m: {"loc": [], "iou": [], "labels": []} for m in METHODS}
    fits, renders = [], []
    for index in range(scenes):
        scene_dir = out / "world" / f"scene_{index:03d}"
        if not (scene_dir / "scene.json").is_file():
            write_scene3d(scene_dir, seed, index, train_views=train_views, test_views=test_views)
        meta = fit_field(
            scene_dir, out / "fields" / f"scene_{index:03d}", predictor, cfg, progress=progress
        )
        fits.append(meta)
        field = LanguageField.load(out / "fields" / f"scene_{index:03d}", predictor)
        predictor.set_vocabulary("synthetic_world")
        records = score_scene(field, predictor, scene_dir, vocabulary, seen)
        for method in METHODS:
            for key in all_records[method]:
                all_records[method][key] += records[method][key]
        renders.append(render_timing(field))
        if index == 0:
            figure(field, predictor, scene_dir, query, out / "figure.png")
    report = {
        "scenes": scenes,
        "held_out_views": scenes * test_views,
        "summary": summarise(all_records, seen),
        "fit_minutes": [sum(m["timings_s"].values()) / 60 for m in fits],
        "fit_stage_minutes": {
            stage: float(np.mean([m["timings_s"][stage] for m in fits])) / 60
            for stage in fits[0]["timings_s"]
        },
        "gaussians": [m["gaussians"] for m in fits],
        "render_256_seconds": float(np.mean(renders)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "probe": memory_probe(),
        "threads": torch.get_num_threads(),
        "novel_classes": sorted(n for n, s in seen.items() if not s),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1))
    write_text_atomic(out / "report.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        f"{report['scenes']} scenes, {report['held_out_views']} held-out views; novel classes: "
        f"{', '.join(report['novel_classes'])}",
        "",
        "| method | split | localisation % | mIoU % | consistency % | label accuracy % | pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, splits in report["summary"].items():
        for split, values in splits.items():
            lines.append(
                f"| {method} | {split} | {values['localisation']:.1f} | {values['mIoU']:.1f} | "
                f"{values['consistency']:.1f} | {values['label_accuracy']:.1f} | "
                f"{values['pairs']} |"
            )
    stages = ", ".join(f"{k} {v:.1f}" for k, v in report["fit_stage_minutes"].items())
    lines += [
        "",
        f"Fit: {np.mean(report['fit_minutes']):.1f} min per scene ({stages} min), "
        f"{int(np.mean(report['gaussians']))} Gaussians; render of a 256x256 view "
        f"{report['render_256_seconds'] * 1000:.0f} ms; peak RSS {report['peak_rss_mib']:.0f} MiB; "
        f"{report['threads']} threads.",
    ]
    probe = report.get("probe")
    if probe:
        lines.append(
            f"{probe['gaussians']} random Gaussians at {probe['size']}x{probe['size']}: forward "
            f"{probe['forward_s']:.2f} s, forward + backward {probe['forward_backward_s']:.2f} s;"
            f" process peak RSS {probe['rss_start_mib']:.0f} MiB at start, "
            f"{probe['rss_forward_mib']:.0f} after the forward pass, "
            f"{probe['rss_backward_mib']:.0f} after the backward pass."
        )
    return "\n".join(lines) + "\n"
