"""The numbers of training-free lifting (``ovseg bench-lift``): accuracy in the synthetic 3D
world against the trained 3-channel field on the same scenes, and speed and memory at the
scale of real captures.

**Accuracy** (:func:`run_accuracy`): per scene, the trained field of ``fields fit`` (or one
from ``bench-fields``), its Gaussians lifted onto (a), and the scene's ground-truth splat
lifted onto (b), scored on the held-out views with :func:`ovseg.synthetic.fields_report.
score_scene` (localisation, mIoU, consistency, label accuracy; base / novel), with ovseg in 2D
on the same views; the time of lifting against the trained fit's autoencoder + language
stages on the same geometry; on the ground-truth splat, each Gaussian's label against the
segment it was sampled from. With ``refine`` > 0 both lifts are repeated with that many
least-squares passes (:mod:`ovseg.fields.lift_refine`) as rows of their own. Finished fits
and lifts with the same settings are reused, so scoring again is cheap.

**Scale** (:func:`run_scale`): a ground-truth splat of N Gaussians with V views of W x H
rendered from it; the features are the views' true segment maps with their classes' text
embeddings (the lifting's cost does not depend on where segments come from; ovseg's own 2D
inference is timed per view beside it). Each size runs in a fresh process so its peak RSS
(VmHWM) is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ovseg.fileio import write_text_atomic

LIFTED_METHODS = ("lifted (fitted Gaussians)", "lifted (ground-truth splat)")


def refined_methods(passes: int) -> tuple[str, str]:
    """The rows of the lifts refined by ``passes`` least-squares passes."""
    return tuple(m.replace("lifted", f"lifted + {passes} LS passes") for m in LIFTED_METHODS)


KEEP_NOVEL_METHODS = tuple(m.replace("lifted", "lifted --keep-novel") for m in LIFTED_METHODS)


def run_accuracy(
    out: str | Path,
    *,
    scenes: int = 3,
    fit_scenes: int | None = None,
    seed: int = 0,
    fields: Path | None = None,
    gaussians: int = 100_000,
    cfg=None,
    refine: int = 0,
    keep_novel: bool = False,
    progress: bool = True,
) -> dict:
    """Lifts onto each scene's ground-truth splat; on the first ``fit_scenes`` (default all)
    also fits the trained field (or reuses ``fields``/scene_K) and lifts onto its Gaussians;
    with ``refine`` > 0 each lift again with that many least-squares passes; with
    ``keep_novel`` each lift again from 2D segments made with the keep-novel panoptic rule
    (``fields lift --keep-novel``; scored with the same queries); scores -> a
    report dict: ``summary`` over every scene (ground-truth splat and 2D), and
    ``fitted_summary`` over the fitted scenes (all methods). See the module doc. A fit or
    lift already finished in ``out`` with the same settings is reused, not redone (so a run
    after a change to scoring or refinement costs the scoring and what changed)."""
    from ovseg.fields.field import LanguageField
    from ovseg.fields.lift import LiftConfig, LiftedField
    from ovseg.fields.splat_ply import write_splat
    from ovseg.predictor import OVSegPredictor
    from ovseg.synthetic.fields_report import METHODS, score_scene, summarise
    from ovseg.synthetic.splat3d import scene_splat
    from ovseg.synthetic.world3d import make_scene3d, write_scene3d

    out = Path(out)
    fit_scenes = scenes if fit_scenes is None else fit_scenes
    predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
    vocabulary = predictor.set_vocabulary("synthetic_world")
    base = {n.casefold() for n in predictor.train_vocabulary.names}
    seen = {name: name.casefold() in base for name in vocabulary.names}
    refined = refined_methods(refine) if refine else ()
    lifts = {LIFTED_METHODS: ("", LiftConfig(), predictor)}
    if refine:
        lifts[refined] = (f"_refine{refine}", LiftConfig(refine_iterations=refine), predictor)
    novel = KEEP_NOVEL_METHODS if keep_novel else ()
    if keep_novel:
        novel_predictor = OVSegPredictor.from_pretrained("synthetic_tiny", keep_novel=True)
        lifts[novel] = ("_keep_novel", LiftConfig(), novel_predictor)
    lifted_rows = (*LIFTED_METHODS, *refined, *novel)
    methods = ("trained field", *lifted_rows, *METHODS[1:])
    on_truth = (*lifted_rows[1::2], *METHODS[1:])
    every = {m: {"loc": [], "iou": [], "labels": []} for m in on_truth}
    fitted = {m: {"loc": [], "iou": [], "labels": []} for m in methods}
    timings, gaussian_hits = [], []

    def score(field) -> dict:
        predictor.set_vocabulary("synthetic_world")
        return score_scene(field, predictor, scene_dir, vocabulary, seen)

    for index in range(scenes):
        name = f"scene_{index:03d}"
        scene_dir = out / "world" / name
        if not (scene_dir / "scene.json").is_file():
            write_scene3d(scene_dir, seed, index)
        if not (scene_dir / "splat.ply").is_file():
            splat, truth = scene_splat(make_scene3d(seed, index), gaussians, seed=seed)
            write_splat(scene_dir / "splat.ply", splat)
            np.save(scene_dir / "gaussian_segments.npy", truth)
        truth = np.load(scene_dir / "gaussian_segments.npy")
        timing, found_gt = {}, {}
        for (_, on_gt), (suffix, lift_cfg, lifter) in lifts.items():
            gt_meta = _lift_once(
                scene_dir,
                scene_dir / "splat.ply",
                out / f"lifted_gt{suffix}" / name,
                lifter,
                lift_cfg,
                progress,
            )
            lifted_gt = LiftedField.load(out / f"lifted_gt{suffix}" / name, predictor)
            found_gt[on_gt] = score(lifted_gt)
            _add(every[on_gt], found_gt[on_gt]["field"])
            timing[f"lift_gt{suffix}_s"] = gt_meta["timings_s"]["lift"]
            if lift_cfg.refine_iterations:
                timing["refine_gt_s"] = gt_meta["timings_s"]["refine"]
            elif not suffix:
                gaussian_hits.append(_gaussian_labels(lifted_gt, predictor, scene_dir, truth))
                timing["features_s"] = gt_meta["timings_s"]["features"]
                timing["gt_gaussians"] = gt_meta["gaussians"]
        for method in METHODS[1:]:
            _add(every[method], found_gt[LIFTED_METHODS[1]][method])
        if index < fit_scenes:
            field_dir = (fields or out / "fields") / name
            fit_meta = _fit_once(
                scene_dir, field_dir, predictor, cfg or bench_fields_config(), progress
            )
            found = score(LanguageField.load(field_dir, predictor))
            _add(fitted["trained field"], found["field"])
            for method in METHODS[1:]:
                _add(fitted[method], found[method])
            for (on_fit, on_gt), (suffix, lift_cfg, lifter) in lifts.items():
                fit_lift_dir = out / f"lifted_fit{suffix}" / name
                fit_lift_meta = _lift_once(
                    scene_dir, field_dir, fit_lift_dir, lifter, lift_cfg, progress
                )
                _add(fitted[on_fit], score(LiftedField.load(fit_lift_dir, predictor))["field"])
                _add(fitted[on_gt], found_gt[on_gt]["field"])
                timing[f"lift_fitted{suffix}_s"] = fit_lift_meta["timings_s"]["lift"]
                if lift_cfg.refine_iterations:
                    timing["refine_fitted_s"] = fit_lift_meta["timings_s"]["refine"]
            timing.update(
                {
                    "trained_language_s": fit_meta["timings_s"]["autoencoder"]
                    + fit_meta["timings_s"]["language"],
                    "trained_total_s": sum(fit_meta["timings_s"].values()),
                    "fitted_gaussians": fit_meta["gaussians"],
                }
            )
        timings.append(timing)
    hits = np.concatenate(gaussian_hits)
    report = {
        "scenes": scenes,
        "fit_scenes": fit_scenes,
        "summary": summarise(every, seen),
        "fitted_summary": summarise(fitted, seen) if fit_scenes else None,
        "timings": timings,
        "gaussian_label_accuracy": 100 * float(hits.mean()) if len(hits) else float("nan"),
        "threads": torch.get_num_threads(),
        "refine": refine,
        "keep_novel": keep_novel,
        "novel_classes": sorted(n for n, s in seen.items() if not s),
    }
    write_text_atomic(out / "accuracy.json", json.dumps(report, indent=1))
    return report


def _fit_once(scene_dir: Path, field_dir: Path, predictor, cfg, progress: bool) -> dict:
    """field.json of the trained field in ``field_dir``: a finished fit with ``cfg`` is
    reused, anything else fitted (or resumed) by :func:`ovseg.fields.field.fit_field`."""
    from ovseg.fields.field import LanguageField, fit_field
    from ovseg.fields.folders import FieldError, same_segment_rule

    try:
        meta = LanguageField.read_meta(field_dir)
    except FieldError:
        meta = None
    if meta is not None and same_segment_rule(meta, predictor) and meta["config"] == cfg.to_dict():
        return meta
    return fit_field(scene_dir, field_dir, predictor, cfg, progress=progress)


def _lift_once(scene_dir: Path, splat, lift_dir: Path, predictor, cfg, progress: bool) -> dict:
    """field.json of the lift in ``lift_dir``: a finished one of ``splat`` (unchanged since)
    with ``cfg`` is reused, anything else lifted by :func:`ovseg.fields.lift.lift_field`."""
    from ovseg.fields.folders import FieldError, same_segment_rule
    from ovseg.fields.lift import LiftedField, lift_field, splat_identity

    try:
        meta = LiftedField.read_meta(lift_dir)
    except FieldError:
        meta = None
    same = (
        meta is not None and meta["config"] == cfg.to_dict() and same_segment_rule(meta, predictor)
    )
    if same and all(meta[k] == v for k, v in splat_identity(splat).items()):
        return meta
    return lift_field(scene_dir, splat, lift_dir, predictor, cfg, progress=progress)


def bench_fields_config():
    """The trained field's settings of ``ovseg bench-fields`` (the README's table): colour
    600 iterations, densification over the first 400 from 100, latents 300."""
    from ovseg.fields.field import FieldConfig
    from ovseg.fields.fit import LatentFitConfig, colour_config

    return FieldConfig(colour=colour_config(600), language=LatentFitConfig(iterations=300))


def _add(into: dict, found: dict) -> None:
    for key in into:
        into[key] += found[key]


def _gaussian_labels(field, predictor, scene_dir: Path, truth: np.ndarray) -> np.ndarray:
    """Per lifted Gaussian of the ground-truth splat: is the scene class whose text is
    closest to its feature the class of the segment it was sampled from?"""
    meta = json.loads((scene_dir / "scene.json").read_text())
    names = sorted({s["category"] for s in meta["segments"]})
    text = predictor.text_encoder.encode_texts(names).float().cpu()
    predicted = field.gaussian_cosines(text).argmax(0).numpy()
    true_class = np.array([names.index(meta["segments"][s]["category"]) for s in truth])
    lifted = field.lifted.numpy()
    return (predicted == true_class)[lifted]


# ---------------------------------------------------------------------------------------
# scale

_SCALE = """
import json, sys, time
import numpy as np, torch
from pathlib import Path
from PIL import Image
from ovseg.fields.lift import LiftConfig, LiftedField, finish_mixture, lift_segments
from ovseg.fields.posed_images import load_posed_images
from ovseg.fields.splat_ply import read_splat

def peak_mib():
    with open("/proc/self/status") as status:
        return int(next(l for l in status if l.startswith("VmHWM:")).split()[1]) / 1024

scene_dir, threads, refine = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
import numba
numba.set_num_threads(threads)
start = time.perf_counter()
splat = read_splat(scene_dir / "splat.ply")
read_s = time.perf_counter() - start
scene = load_posed_images(scene_dir, check_images=False)
cameras = [scene.cameras[i] for i in scene.split("train")]
meta = json.loads((scene_dir / "scene.json").read_text())
maps, start = [], time.perf_counter()
for camera in cameras:
    segment = np.asarray(Image.open(scene_dir / "segments" / f"{camera.name}.png"))
    maps.append(np.where(segment == 255, -1, segment.astype(np.int64)))
maps_s = time.perf_counter() - start
from ovseg.predictor import OVSegPredictor
predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
names = [s["category"] for s in meta["segments"]]
text = predictor.text_encoder.encode_texts(names).float().cpu()
embeddings = torch.cat([text[: int(m.max()) + 1] for m in maps])
cfg = LiftConfig()
stats, start = {}, time.perf_counter()
state = lift_segments(splat, cameras, maps, cfg, progress=False, stats=stats)
tensors = finish_mixture(state, embeddings, cfg)
lift_s = time.perf_counter() - start
lift_peak, refined = peak_mib(), {}
if refine:
    from ovseg.fields.lift_refine import refine_mixture
    start = time.perf_counter()
    tensors = refine_mixture(tensors, splat, cameras, maps, refine, cfg.refine_rank,
                             progress=False, stats=refined)
    refined["refine_s"] = time.perf_counter() - start
    refined["refine"] = refine
field = LiftedField(scene_dir, {}, splat, tensors, predictor)
field.gaussian_relevancy([names[0]])
start = time.perf_counter()
for _ in range(3):
    field.gaussian_relevancy([names[-1]])
query_s = (time.perf_counter() - start) / 3
test = scene.cameras[scene.split("test")[0]]
field.relevancy(test, [names[-1]])
start = time.perf_counter()
field.relevancy(test, [names[-1]])
heatmap_s = time.perf_counter() - start
truth = np.load(scene_dir / "gaussian_segments.npy")
text_classes = field.gaussian_cosines(text).argmax(0).numpy()
lifted = field.lifted.numpy()
print(json.dumps({"gaussians": len(splat), "views": len(cameras), "width": cameras[0].width,
    "height": cameras[0].height, "read_s": read_s, "segment_maps_s": maps_s, "lift_s": lift_s,
    **stats["lift_steps_s"], "dropped_weight": stats["dropped_weight"],
    "query_s": query_s, "heatmap_s": heatmap_s,
    "lifted_share": float(lifted.mean()),
    "gaussian_accuracy": float((text_classes == truth)[lifted].mean()),
    "peak_rss_mib": peak_mib(), "lift_peak_rss_mib": lift_peak, **refined,
    "threads": threads}))
"""

_INFERENCE = """
import json, sys, time
import numpy as np
from PIL import Image
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[2]))
from ovseg.fields.language import view_segments
from ovseg.predictor import OVSegPredictor
predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
predictor.set_vocabulary("synthetic_world")
paths = sorted((Path(sys.argv[1]) / "images").glob("*.png"))[:3]
images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
view_segments(predictor, images[0])
start = time.perf_counter()
for image in images[1:]:
    view_segments(predictor, image)
print(json.dumps({"inference_s_per_view": (time.perf_counter() - start) / (len(images) - 1)}))
"""


def run_scale(
    out: str | Path,
    sizes: list[tuple[int, int, int, int]],
    *,
    seed: int = 0,
    threads: int | None = None,
    refine: int = 0,
    progress: bool = True,
) -> list[dict]:
    """For each (gaussians, views, width, height): write the world (once), then lift (and
    refine with ``refine`` least-squares passes) and query it in a fresh process; returns one
    record per size (module doc)."""
    from ovseg.synthetic.splat3d import write_splat_world

    out = Path(out)
    threads = threads or torch.get_num_threads()
    records = []
    for gaussians, views, width, height in sizes:
        scene_dir = out / f"splat_{gaussians}_{views}v_{width}x{height}"
        if not (scene_dir / "scene.json").is_file():
            start = time.perf_counter()
            write_splat_world(
                scene_dir,
                seed,
                0,
                gaussians=gaussians,
                train_views=views,
                test_views=2,
                width=width,
                height=height,
                progress=progress,
            )
            print(f"wrote {scene_dir} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        record = _subprocess_json(_SCALE, scene_dir, threads, refine)
        record.update(_subprocess_json(_INFERENCE, scene_dir, threads))
        records.append(record)
        print(json.dumps(record), file=sys.stderr)
        write_text_atomic(out / "scale.json", json.dumps(records, indent=1))
    return records


def _subprocess_json(code: str, scene_dir: Path, threads: int, *args) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, str(scene_dir), str(threads), *map(str, args)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"bench-lift: a measurement failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(accuracy: dict | None, scale: list[dict] | None) -> str:
    """The README's tables from the two reports."""
    lines = []
    if accuracy:
        lines += [f"Novel classes: {', '.join(accuracy['novel_classes'])}."]
        tables = [(f"{accuracy['scenes']} scenes", accuracy["summary"])]
        if accuracy.get("fitted_summary"):
            tables.append(
                (
                    f"the first {accuracy['fit_scenes']} scene(s), with the trained field",
                    accuracy["fitted_summary"],
                )
            )
        for title, summary in tables:
            lines += [
                "",
                f"{title}:",
                "",
                "| method | split | localisation % | mIoU % | consistency % | "
                "label accuracy % | pairs |",
                "|---|---|---|---|---|---|---|",
            ]
            for method, splits in summary.items():
                for split, v in splits.items():
                    lines.append(
                        f"| {method} | {split} | {v['localisation']:.1f} | "
                        f"{v['mIoU']:.1f} | {v['consistency']:.1f} | "
                        f"{v['label_accuracy']:.1f} | {v['pairs']} |"
                    )
        t = accuracy["timings"]

        def mean(key):
            values = [x[key] for x in t if key in x]
            return float(np.mean(values)) if values else float("nan")

        lines += [
            "",
            f"Lifting onto the ground-truth splat ({mean('gt_gaussians'):.0f} Gaussians) "
            f"{mean('lift_gt_s'):.2f} s per scene, 2D features {mean('features_s'):.1f} s; per "
            f"Gaussian, {accuracy['gaussian_label_accuracy']:.1f}% of the lifted ones are "
            f"labelled with the class they were sampled from. {accuracy['threads']} thread(s).",
        ]
        if accuracy.get("fit_scenes"):
            lines[-1] += (
                f" Trained field: autoencoder + language stages {mean('trained_language_s'):.0f} "
                f"s per scene (whole fit {mean('trained_total_s') / 60:.1f} min, "
                f"{mean('fitted_gaussians'):.0f} Gaussians); lifting onto the same Gaussians "
                f"{mean('lift_fitted_s'):.2f} s "
                f"({mean('trained_language_s') / mean('lift_fitted_s'):.0f}x faster)."
            )
        if accuracy.get("refine"):
            lines[-1] += (
                f" {accuracy['refine']} least-squares passes after the lift: "
                f"{mean('refine_gt_s'):.1f} s on the ground-truth splat"
                + (
                    f", {mean('refine_fitted_s'):.1f} s on the fitted Gaussians."
                    if accuracy.get("fit_scenes")
                    else "."
                )
            )
    if scale:
        lines += [
            "",
            "| Gaussians | views | size | lift (s) | of which project / raster | per view | "
            "LS passes: N, s (objective at pass N vs the lift) | 2D inference per view | "
            "query | heat map | "
            "peak RSS (MiB): lift / with passes |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in scale:
            refined = "-"
            if r.get("refine"):
                objectives = r["refine_objectives"]
                fall = 100 * (1 - objectives[-1] / objectives[0]) if objectives[0] else 0.0
                refined = f"{r['refine']}, {r['refine_s']:.1f} s (-{fall:.1f}%)"
            lines.append(
                f"| {r['gaussians']:,} | {r['views']} | {r['width']}x{r['height']} | "
                f"{r['lift_s']:.1f} | {r['project_s']:.1f} / {r['raster_s']:.1f} | "
                f"{r['lift_s'] / r['views']:.2f} | {refined} | {r['inference_s_per_view']:.2f} | "
                f"{r['query_s'] * 1000:.0f} ms | {r['heatmap_s']:.2f} s | "
                f"{r.get('lift_peak_rss_mib', r['peak_rss_mib']):.0f} / {r['peak_rss_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def figure(out: Path, phrase: str) -> None:
    """OUT/figure.png: scene 0's first held-out view: the truth, and ``phrase``'s heat map
    from the trained field, the field lifted onto its Gaussians, the field lifted onto the
    ground-truth splat, and ovseg in 2D."""
    from PIL import Image

    from ovseg.fields.field import LanguageField
    from ovseg.fields.lift import LiftedField
    from ovseg.fileio import atomic_write
    from ovseg.predictor import OVSegPredictor
    from ovseg.synthetic.fields_report import captioned
    from ovseg.visualize import draw_heatmap

    predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
    name = "scene_000"
    lifted = LiftedField.load(out / "lifted_gt" / name, predictor)
    posed = lifted.scene()
    index = posed.split("test")[0]
    camera = posed.cameras[index]
    truth = np.asarray(Image.open(posed.image_paths[index]).convert("RGB"))
    panels = [captioned(truth, "held-out view (truth)")]
    fields_dir = Path(json.loads((out / "lifted_fit" / name / "field.json").read_text())["splat"])
    for field, note in (
        (LanguageField.load(fields_dir, predictor), "trained field"),
        (LiftedField.load(out / "lifted_fit" / name, predictor), "lifted, fitted Gaussians"),
        (lifted, "lifted, true splat"),
    ):
        result = field.relevancy(camera, [phrase])
        render = (result["rgb"].numpy() * 255).round().astype(np.uint8)
        panels.append(draw_heatmap(render, result["relevancy"][0].numpy(), phrase, note=note))
    panels.append(
        draw_heatmap(truth, predictor.heatmap(truth, [phrase])[0], phrase, note="2D, same view")
    )
    height = max(p.height for p in panels)
    canvas = Image.new(
        "RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), height), "white"
    )
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + 8
    canvas = canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST)
    atomic_write(out / "figure.png", lambda tmp: canvas.save(tmp, format="PNG"))
