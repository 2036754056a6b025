"""The synthetic open-vocabulary world, end to end (logic of tools/synthetic_world.py).

1. generate COCO-panoptic scenes of shapes on textures, with captions (ovseg.synthetic.scenes);
2. train a small open_clip ConvNeXt CLIP on captions of whole scenes and of object / texture
   crops: it sees every class in words, novel ones included, as a real CLIP sees the web
   (ovseg.synthetic.caption_pairs);
3. train ovseg with that CLIP frozen on BASE classes only (novel pixels are void);
4. evaluate the shipped (fp16) form on val with the full vocabulary: PQ and mIoU for base and
   novel classes with the in-vocabulary head alone, the out-of-vocabulary (mask-pooled CLIP)
   head alone and their ensemble, next to the CLIP's zero-shot accuracy and a chance baseline
   (ovseg.synthetic.report).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ovseg.data import PanopticDataset
from ovseg.synthetic.caption_pairs import clip_zero_shot, crop_pairs, region_pairs
from ovseg.synthetic.config import WorldConfig
from ovseg.synthetic.report import evaluate_world, write_report
from ovseg.synthetic.scenes import CATEGORIES, base_novel_split, write_synthetic_panoptic
from ovseg.vocabulary import Vocabulary


class BaseOnlyDataset:
    """A panoptic dataset restricted to base classes: novel segments become void (unlabeled)
    and the remaining classes are renumbered 0..len(base)-1."""

    def __init__(self, dataset: PanopticDataset, base_indices: list[int]) -> None:
        self.dataset = dataset
        self.remap = {old: new for new, old in enumerate(base_indices)}
        full = dataset.vocabulary
        self.vocabulary = Vocabulary(
            tuple(full.classes[i] for i in base_indices),
            tuple(full.is_thing[i] for i in base_indices),
            name="base",
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        keep = [s for s in sample["segments_info"] if s["category_id"] in self.remap]
        dropped = [s["id"] for s in sample["segments_info"] if s["category_id"] not in self.remap]
        panoptic = sample["panoptic"].copy()
        panoptic[np.isin(panoptic, dropped)] = 0
        non_crowd = [s for s in sample["segments_info"] if not s["iscrowd"]]
        kept_rows = [i for i, s in enumerate(non_crowd) if s["category_id"] in self.remap]
        sem_seg = np.full_like(sample["sem_seg"], 255)
        for old, new in self.remap.items():
            sem_seg[sample["sem_seg"] == old] = new
        sample.update(
            panoptic=panoptic,
            sem_seg=sem_seg,
            segments_info=[dict(s, category_id=self.remap[s["category_id"]]) for s in keep],
            masks=sample["masks"][kept_rows],
            labels=np.array(
                [self.remap[int(sample["labels"][i])] for i in kept_rows], dtype=np.int64
            ),
        )
        return sample


@dataclass
class World:
    """The generated scenes and their base / novel split."""

    train_set: PanopticDataset
    val_set: PanopticDataset
    train_json: Path
    val_json: Path
    novel: list[bool]  # per class index: held out of segmentation training
    base_vocab_path: Path  # the base classes, in the vocabulary-file format

    @property
    def base_indices(self) -> list[int]:
        return [i for i, is_novel in enumerate(self.novel) if not is_novel]


def _log(message: str) -> None:
    print(f"[synthetic world] {message}", file=sys.stderr, flush=True)


def run(out: str | Path, cfg: WorldConfig, *, progress: bool = True) -> dict:
    """Everything: data, CLIP, segmentation training, evaluation, report (out/report.json,
    report.md, predictions.png, synthetic_tiny.safetensors). Returns the report. With
    ``cfg.evaluate_weights`` no training: that finished model is evaluated on the world's val
    scenes with the split of ``cfg.split_seed`` (its zero-shot numbers from its CLIP)."""
    from ovseg.config import load_config
    from ovseg.modeling.fcclip import build_model
    from ovseg.preprocess import shortest_edge_size

    out = Path(out)
    started = time.perf_counter()
    timings = {}

    def lap(name: str) -> None:  # seconds since the previous lap
        timings[name] = time.perf_counter() - started - sum(timings.values())

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    world = make_world(out, cfg)
    lap("data_s")

    model_cfg = load_config("synthetic_tiny")
    model_cfg.text.train_vocabulary = str(world.base_vocab_path)
    model = build_model(model_cfg)
    test_hw = shortest_edge_size(*cfg.size, cfg.test_short_side, model_cfg.inference.max_size_test)
    if cfg.evaluate_weights or cfg.clip_from:
        clip_losses = load_world_clip(model, cfg.evaluate_weights or cfg.clip_from)
    else:
        clip_losses = train_world_clip(
            model, model_cfg, world, test_hw, cfg, rng, progress=progress
        )
    lap("clip_s")
    zero_shot = clip_zero_shot(
        model.backbone.clip,
        model.backbone,
        world.val_set,
        world.val_json,
        test_hw,
        world.novel,
        rng,
        mean=model_cfg.inference.pixel_mean,
        std=model_cfg.inference.pixel_std,
    )
    _log_zero_shot(zero_shot)

    if cfg.evaluate_weights:
        weights_path = Path(cfg.evaluate_weights)
        report = evaluate_weights(model_cfg, world, cfg, out, weights_path, progress=progress)
    else:
        train_base_segmentation(model, model_cfg, world, cfg, out, progress=progress)
        lap("segmentation_s")
        weights_path = out / "synthetic_tiny.safetensors"
        report = ship_and_evaluate(model_cfg, world, cfg, out, weights_path, progress=progress)
    for name, row in report["per_class"].items():
        row["zero_shot_crops"] = zero_shot["per_class"].get(name, float("nan"))
        row["zero_shot_regions"] = zero_shot["regions_per_class"].get(name, float("nan"))
    vocab = world.train_set.vocabulary
    report.update(
        config=dataclasses.asdict(cfg),
        zero_shot=zero_shot,
        clip_loss_first_last=clip_losses[:1] + clip_losses[-1:],  # [] when --clip-from
        novel_classes=[n for n, k in zip(vocab.names, world.novel, strict=True) if k],
        weights=str(weights_path),
        weights_mib=weights_path.stat().st_size / 2**20,
    )
    lap("evaluation_s")
    timings["total_s"] = time.perf_counter() - started
    report["timings"] = timings
    write_report(out, report)
    return report


def make_world(out: Path, cfg: WorldConfig) -> World:
    """Phase 1: write the train / val scenes under out/data, choose the novel classes and
    write the base ones to out/base_vocab.txt."""
    data = out / "data"
    scene_style = dict(size=cfg.size, seed=cfg.seed, patterns=cfg.patterns)
    train_json = write_synthetic_panoptic(data, cfg.num_train, split="train", **scene_style)
    val_json = write_synthetic_panoptic(data, cfg.num_val, split="val", **scene_style)
    train_set = PanopticDataset(
        train_json.parent / "images", train_json, train_json.parent / "panoptic"
    )
    val_set = PanopticDataset(val_json.parent / "images", val_json, val_json.parent / "panoptic")
    vocab = train_set.vocabulary
    novel_ids = set(base_novel_split(cfg.novel_things, cfg.novel_stuff, seed=cfg.split_seed))
    novel = [CATEGORIES[i].id in novel_ids for i in range(len(CATEGORIES))]
    world = World(train_set, val_set, train_json, val_json, novel, out / "base_vocab.txt")
    world.base_vocab_path.write_text(
        "".join(
            f"{'thing' if vocab.is_thing[i] else 'stuff'}\t{', '.join(vocab.classes[i])}\n"
            for i in world.base_indices
        )
    )
    _log(
        f"{cfg.num_train} train / {cfg.num_val} val scenes; novel classes: "
        f"{', '.join(n for n, k in zip(vocab.names, novel, strict=True) if k)}"
    )
    return world


def read_world_clip(path: str | Path) -> dict[str, torch.Tensor]:
    """The CLIP tensors (``backbone.clip.*``, prefix removed, float32) of the weights file
    ``path``. Raises :class:`ovseg.checkpoint.WeightsError` (one line) when the file is
    missing, corrupt or holds no CLIP."""
    from ovseg.checkpoint import CLIP_PREFIX, WeightsError, read_state_dict

    state = read_state_dict(path, keep=lambda key: key.startswith(CLIP_PREFIX))
    if not state:
        raise WeightsError(
            f"{path} holds no CLIP weights ({CLIP_PREFIX}*): give a finished synthetic-world "
            "run's weights, e.g. the shipped synthetic_tiny"
        )
    return {key[len(CLIP_PREFIX) :]: value.float() for key, value in state.items()}


def load_world_clip(model, path: str | Path) -> list[float]:
    """Phase 2 from a finished run: copy the CLIP (``backbone.clip.*``, nothing else: the
    segmentation heads of another split would have seen this split's novel classes) from the
    weights file ``path`` into ``model`` as float32, frozen. Returns no losses (an empty
    list). Raises :class:`ovseg.checkpoint.WeightsError` when the file has no CLIP or one of
    another shape."""
    from ovseg.checkpoint import load_state

    load_state(model.backbone.clip, read_world_clip(path), source=f"the CLIP of {path}")
    model.backbone.clip.requires_grad_(False)
    model.backbone.reset_fingerprint()
    _log(f"CLIP from {path} (not trained here)")
    return []


def train_world_clip(
    model,
    model_cfg,
    world: World,
    test_hw: tuple[int, int],
    cfg: WorldConfig,
    rng: np.random.Generator,
    *,
    progress: bool,
) -> list[float]:
    """Phase 2: train the model's CLIP (in place) on captions of everything, novel classes
    included: first object / texture crops alone, then scenes at the test scale ``test_hw``
    (H, W) with region captions mixed in. Returns the loss of every step; the CLIP is frozen
    again at the end."""
    from ovseg.synthetic.clip_training import (
        CLIPTrainConfig,
        ImagePool,
        reset_layer_scale,
        train_clip,
    )

    clip, backbone = model.backbone.clip, model.backbone
    # Scenes at the test scale with their captions and box-region captions, and object /
    # texture crops. Captions saying the same words (in other phrasings) are positives.
    regions, _ = region_pairs(world.train_set, world.train_json, test_hw, rng)
    crops, crop_captions, _, crop_words = crop_pairs(world.train_set, world.train_json, rng)
    crop_pool = ImagePool(torch.from_numpy(crops), crop_captions, crop_words)
    reset_layer_scale(clip, 1.0)
    clip.requires_grad_(True)  # the backbone froze it; it is frozen again right after
    clip_losses = []
    for steps, pools, batch_sizes in (
        (cfg.clip_crop_steps, [crop_pool], (cfg.clip_first_crops,)),
        (cfg.clip_steps, [regions, crop_pool], (cfg.clip_scenes, cfg.clip_crops)),
    ):
        clip_losses += train_clip(
            clip,
            pools,
            CLIPTrainConfig(steps=steps, batch_sizes=batch_sizes, lr=cfg.clip_lr, seed=cfg.seed),
            mean=model_cfg.inference.pixel_mean,
            std=model_cfg.inference.pixel_std,
            tokenize=backbone.tokenize,
            progress=progress,
        )
    clip.requires_grad_(False)
    backbone.reset_fingerprint()
    return clip_losses


def _log_zero_shot(result: dict) -> None:
    _log(
        f"CLIP zero-shot accuracy, val crops: {result['all']:.1f}% (base {result['base']:.1f}, "
        f"novel {result['novel']:.1f}); val regions: {result['regions_all']:.1f}% (base "
        f"{result['regions_base']:.1f}, novel {result['regions_novel']:.1f}); chance "
        f"{result['chance']:.1f}"
    )


def train_base_segmentation(
    model, model_cfg, world: World, cfg: WorldConfig, out: Path, *, progress: bool
) -> None:
    """Phase 3: train ovseg, initialised from ``model`` (its trained CLIP frozen), on base
    classes only (novel pixels are void). Writes out/init_with_clip.safetensors and the run
    under out/segmentation (model_final.safetensors last)."""
    from ovseg.checkpoint import save_weights

    init_path = out / "init_with_clip.safetensors"
    save_weights(model.state_dict(), init_path)
    train_segmentation(model_cfg, world, cfg, out, init_path, progress=progress)


def train_segmentation(
    model_cfg, world: World, cfg: WorldConfig, out: Path, init_path: Path, *, progress: bool
) -> None:
    """Phase 3's training run from the weights file ``init_path`` (its CLIP frozen) into
    out/segmentation, with the world's recipe (``cfg``: iterations, batch, crop, seed)."""
    from ovseg.data import LargeScaleJitter
    from ovseg.train.loop import TrainConfig, train

    seg_cfg = TrainConfig(
        max_iters=cfg.seg_iters,
        batch_size=cfg.seg_batch,
        lr=cfg.seg_lr,
        warmup_iters=min(100, cfg.seg_iters // 10),
        warmup_factor=0.01,
        clip_grad=0.1,
        crop_size=cfg.seg_crop,
        min_scale=0.5,
        max_scale=1.5,
        num_points=2048,
        checkpoint_every=max(cfg.seg_iters // 3, 1),
        log_every=10,
        num_workers=0,
        seed=cfg.seed,
        load_clip_weights=False,
        save_clip=True,
        ignore_void=cfg.ignore_void,
        void_aware_no_object=cfg.void_aware_no_object,
    )
    train(
        model_cfg,
        seg_cfg,
        BaseOnlyDataset(world.train_set, world.base_indices),
        out / "segmentation",
        transform=LargeScaleJitter(crop_size=cfg.seg_crop, min_scale=0.5, max_scale=1.5),
        init_weights=str(init_path),
        resume="auto" if (out / "segmentation" / "checkpoints").is_dir() else None,
        progress=progress,
    )


def ship_and_evaluate(
    model_cfg, world: World, cfg: WorldConfig, out: Path, weights_path: Path, *, progress: bool
) -> dict:
    """Phase 4: write the trained model in its shipped form (fp16 safetensors) to
    ``weights_path``, reload it and evaluate that (see :func:`report.evaluate_world`)."""
    from ovseg.checkpoint import load_weights, save_weights
    from ovseg.modeling.fcclip import build_model

    trained = build_model(model_cfg)
    load_weights(trained, out / "segmentation" / "model_final.safetensors")
    save_weights(
        {k: v.half() if v.is_floating_point() else v for k, v in trained.state_dict().items()},
        weights_path,
        metadata={"config": "synthetic_tiny"},
    )
    return evaluate_weights(model_cfg, world, cfg, out, weights_path, progress=progress)


def evaluate_weights(
    model_cfg, world: World, cfg: WorldConfig, out: Path, weights_path: Path, *, progress: bool
) -> dict:
    """Phase 4's evaluation: the model in ``weights_path`` on the world's val scenes (see
    :func:`report.evaluate_world`)."""
    from ovseg.checkpoint import load_weights
    from ovseg.modeling.fcclip import build_model

    evaluated = build_model(model_cfg)
    load_weights(evaluated, weights_path)
    return evaluate_world(
        evaluated, model_cfg, world.val_set, world.novel, cfg, out, progress=progress
    )
