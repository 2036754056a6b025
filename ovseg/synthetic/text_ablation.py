"""The text-context ablation in the synthetic world (issue 18): the segmentation stage of
:mod:`ovseg.synthetic.world` trained again with each part of
:class:`ovseg.config.TextContextConfig` switched on, on the same scenes, from the same frozen
CLIP (the shipped ``synthetic_tiny``'s), scored like the world's report (PQ and mIoU of base
and novel classes for the in-vocabulary, out-of-vocabulary and ensemble classifiers), with
the training-free pixel-text semantic baseline beside them.

Each (row, seed) runs once into OUT/ROW_seedS (row.json when done, so a stopped ablation goes
on where it was); OUT/ablation.md gathers every finished one.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from ovseg.config import TextContextConfig

ROWS: dict[str, dict] = {
    "baseline": {},
    "pixel_text": {"pixel_text_loss_weight": 1.0},
    "visual_context": {"visual_context_layers": 3},
    "cdt": {"cdt": True},
    "context": {"learnable_context": 8},
    "all": {
        "pixel_text_loss_weight": 1.0,
        "visual_context_layers": 3,
        "cdt": True,
        "learnable_context": 8,
    },
}
COLUMNS = ("PQ_base", "PQ_novel", "mIoU_base", "mIoU_novel")


def row_config(model_cfg, row: str):
    """``model_cfg`` with the text context of ``row`` (KeyError naming the rows)."""
    if row not in ROWS:
        raise KeyError(f"unknown ablation row '{row}': choose from {', '.join(ROWS)}")
    return dataclasses.replace(model_cfg, text_context=TextContextConfig(**ROWS[row]))


def frozen_clip_init(model_cfg, seed: int, path: Path) -> None:
    """A new model of ``model_cfg`` (heads initialised by ``seed``) with the shipped
    synthetic_tiny's trained CLIP, written to ``path`` (the segmentation run's init)."""
    from ovseg import model_zoo
    from ovseg.checkpoint import save_weights
    from ovseg.modeling.fcclip import build_model
    from ovseg.synthetic.world import load_world_clip

    torch.manual_seed(seed)
    model = build_model(model_cfg)
    load_world_clip(model, model_zoo.local_weights("synthetic_tiny"))
    save_weights(model.state_dict(), path)


def run_row(out: Path, world, world_cfg, row: str, seed: int, *, progress: bool) -> dict:
    """Train and score one (row, seed) into out/ROW_seedS; returns (and writes) row.json."""
    from ovseg.config import load_config
    from ovseg.synthetic.world import ship_and_evaluate, train_segmentation

    run_dir = out / f"{row}_seed{seed}"
    done = run_dir / "row.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.perf_counter()
    model_cfg = row_config(load_config("synthetic_tiny"), row)
    model_cfg.prompt_head.enabled = False  # the segmentation stage only
    model_cfg.text.train_vocabulary = str(world.base_vocab_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    init = run_dir / "init_with_clip.safetensors"
    frozen_clip_init(model_cfg, seed, init)
    cfg = dataclasses.replace(world_cfg, seed=seed)
    train_segmentation(model_cfg, world, cfg, run_dir, init, progress=progress)
    report = ship_and_evaluate(
        model_cfg, world, cfg, run_dir, run_dir / "model.safetensors", progress=progress
    )
    record = {
        "row": row,
        "seed": seed,
        "text_context": ROWS[row],
        "iterations": cfg.seg_iters,
        "results": report["results"],
        "minutes": (time.perf_counter() - start) / 60,
    }
    from ovseg.fileio import write_text_atomic

    write_text_atomic(done, json.dumps(record, indent=1))
    return record


def score_map_baseline(world, *, progress: bool) -> dict:
    """The training-free pixel-text semantic output of the shipped synthetic_tiny on val:
    {mIoU, mIoU_base, mIoU_novel}."""
    from ovseg.evaluation.runner import evaluate
    from ovseg.predictor import OVSegPredictor

    predictor = OVSegPredictor.from_pretrained("synthetic_tiny", use_disk_text_cache=False)
    report = evaluate(
        predictor,
        world.val_set,
        tasks=("semantic",),
        head="pixel-text",
        num_workers=0,
        progress=progress,
    )["semantic"]
    return {
        "mIoU": report["mIoU"],
        "mIoU_base": report["mIoU_seen"],
        "mIoU_novel": report["mIoU_unseen"],
    }


def table(records: list[dict], score_map: dict | None) -> str:
    """The markdown table: a line per (row, seed) and classifier mode."""
    lines = [
        "| row | seed | iterations | classifier | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for record in sorted(records, key=lambda r: (list(ROWS).index(r["row"]), r["seed"])):
        for mode, values in record["results"].items():
            cells = " | ".join(f"{values.get(c, float('nan')):.1f}" for c in COLUMNS)
            run = f"{record['row']} | {record['seed']} | {record['iterations']}"
            lines.append(f"| {run} | {mode} | {cells} |")
    if score_map is not None:
        lines.append(
            f"| score maps (training-free) | - | 0 | pixel-text | | | "
            f"{score_map['mIoU_base']:.1f} | {score_map['mIoU_novel']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run(
    out: str | Path,
    rows: list[str],
    seeds: list[int],
    *,
    iterations: int | None = None,
    quick: bool = False,
    progress: bool = True,
) -> str:
    """Every (row, seed) not yet done, then OUT/ablation.md (returned)."""
    from ovseg.fileio import write_text_atomic
    from ovseg.synthetic.config import WorldConfig
    from ovseg.synthetic.world import make_world

    for row in rows:
        if row not in ROWS:
            raise KeyError(f"unknown ablation row '{row}': choose from {', '.join(ROWS)}")
    out = Path(out)
    world_cfg = WorldConfig.quick() if quick else WorldConfig()
    if iterations is not None:
        world_cfg = dataclasses.replace(world_cfg, seg_iters=iterations)
    world = make_world(out / "world", world_cfg)
    for row in rows:
        for seed in seeds:
            print(f"ablation: {row}, seed {seed}", file=sys.stderr)
            run_row(out, world, world_cfg, row, seed, progress=progress)
    score_map = score_map_baseline(world, progress=progress)
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*_seed*/row.json"))]
    text = table(records, score_map)
    write_text_atomic(out / "ablation.md", text)
    return text
