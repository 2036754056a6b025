"""The synthetic open-vocabulary world, end to end (logic of tools/synthetic_world.py).

1. generate COCO-panoptic scenes of shapes on textures, with captions (ovseg.data.synthetic);
2. train a small open_clip ConvNeXt CLIP on captions of whole scenes and of object / texture
   crops: it sees every class in words, novel ones included, as a real CLIP sees the web;
3. train ovseg with that CLIP frozen on BASE classes only (novel pixels are void);
4. evaluate on val with the full vocabulary: PQ and mIoU for base and novel classes with the
   in-vocabulary head alone, the out-of-vocabulary (mask-pooled CLIP) head alone and their
   ensemble, next to the CLIP's zero-shot accuracy and a chance baseline.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ovseg.data import PanopticDataset
from ovseg.synthetic.scenes import CATEGORIES, base_novel_split, write_synthetic_panoptic
from ovseg.vocabulary import Vocabulary

CROP = 64  # side of the object / texture crops the CLIP learns from
# Caption forms of crops, like the many phrasings of web captions (and the test prompts).
CROP_CAPTIONS = (
    "a {}",
    "{}",
    "a photo of a {}.",
    "There is a {} in the scene",
    "a {} in the scene",
    "This is a photo of a {}",
)
MODES = {"in_vocab": (0.0, 0.0), "out_vocab": (1.0, 1.0), "ensemble": (0.4, 0.8)}


@dataclass
class WorldConfig:
    num_train: int = 2000
    num_val: int = 200
    size: tuple[int, int] = (128, 160)
    novel_things: int = 4
    novel_stuff: int = 1
    patterns: bool = True  # things wear their class's surface pattern (synthetic_render)
    split_seed: int = 0
    seed: int = 0
    # CLIP: first object / texture crops alone (it learns the words and shapes fastest
    # there), then scenes at the test scale with region captions mixed in (the dense map
    # learns where things are, which mask pooling needs).
    clip_crop_steps: int = 2000
    clip_steps: int = 500
    clip_scenes: int = 6  # scenes per joint CLIP step (their captions and region captions)
    clip_first_crops: int = 56  # object / texture crops per step of the first phase
    clip_crops: int = 32  # object / texture crops per joint CLIP step
    clip_lr: float = 5e-4
    seg_iters: int = 3600
    # The small heads learn from scratch in few iterations: 1e-3 rather than the official 1e-4
    # (measured at 500 iterations: ensemble base PQ 36.0 vs 30.1 at 2e-4).
    seg_lr: float = 1e-3
    seg_batch: int = 4
    seg_crop: int = 256
    # Void pixels (novel classes among them) out of the mask losses (LossConfig.ignore_void):
    # with them in, every matched mask learns that unlabelled grass is no mask, and novel stuff
    # is never proposed (measured at 500 iterations: grass proposal recall 0% -> 100%, ensemble
    # novel mIoU 4.5 -> 23.9).
    ignore_void: bool = True
    test_short_side: int = 256

    @classmethod
    def quick(cls) -> WorldConfig:
        return cls(num_train=300, num_val=40, clip_crop_steps=150, clip_steps=100, seg_iters=200)


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


def _square_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop a square around an (x, y, w, h) box with a margin, edge-padded, resized to CROP."""
    from PIL import Image

    x, y, w, h = box
    side = max(w, h) * 1.3 + 4
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    pad = s
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    crop = padded[y0 + pad : y0 + pad + s, x0 + pad : x0 + pad + s]
    return np.asarray(Image.fromarray(crop).resize((CROP, CROP), Image.BILINEAR))


def _world_json(json_path: Path) -> tuple[dict, dict]:
    """The world's panoptic JSON as (image id -> caption, (image id, segment id) -> the segment,
    with its ``bbox`` and, for things, its ``colour``)."""
    raw = json.loads(Path(json_path).read_text())
    captions = {im["id"]: im["caption"] for im in raw["images"]}
    segments = {(a["image_id"], s["id"]): s for a in raw["annotations"] for s in a["segments_info"]}
    return captions, segments


def _describe(rng: np.random.Generator, name: str, colour: str | None) -> tuple[str, str]:
    """(caption, words) of one object or texture: its name, with its colour 30% of the time,
    in one of the CROP_CAPTIONS phrasings."""
    words = f"{colour} {name}" if colour and rng.random() < 0.3 else name
    return CROP_CAPTIONS[int(rng.integers(len(CROP_CAPTIONS)))].format(words), words


def crop_pairs(dataset: PanopticDataset, json_path: Path, rng: np.random.Generator):
    """Object / texture crops of a split: (crops (N, CROP, CROP, 3), captions, class indices,
    the words each caption says: the object, with or without its colour)."""
    _, annotations = _world_json(json_path)
    names = dataset.vocabulary.names
    crops, crop_captions, crop_labels, crop_words = [], [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        for segment in sample["segments_info"]:
            mask = sample["panoptic"] == segment["id"]
            name = names[segment["category_id"]]
            if segment["isthing"]:
                annotation = annotations[(sample["image_id"], segment["id"])]
                crops.append(_square_crop(sample["image"], annotation["bbox"]))
                colour = annotation.get("colour")
            else:  # a window lying (almost) entirely inside the texture
                window = 40
                height, width = mask.shape
                for _ in range(12):
                    y = int(rng.integers(0, height - window + 1))
                    x = int(rng.integers(0, width - window + 1))
                    if mask[y : y + window, x : x + window].mean() > 0.95:
                        crops.append(_square_crop(sample["image"], (x, y, window, window)))
                        break
                else:
                    continue
                colour = None
            caption, words = _describe(rng, name, colour)
            crop_captions.append(caption)
            crop_labels.append(segment["category_id"])
            crop_words.append(words)
    return np.stack(crops), crop_captions, np.array(crop_labels), crop_words


def region_pairs(
    dataset: PanopticDataset,
    json_path: Path,
    size_hw: tuple[int, int],
    rng: np.random.Generator,
    stride: int = 32,
):
    """Scenes resized to ``size_hw`` (the test scale) as a RegionPool, and the class of each
    region. A thing's region is the cells of the stride-32 grid whose centres lie in its box;
    a stuff region is the cells lying (>= 90%) inside the texture. Captions say the object (with
    its colour 30% of the time) in one of several phrasings; the scene caption is kept too.
    Only boxes go in, never masks: the information of an object-centric crop."""
    from ovseg.preprocess import resize_image
    from ovseg.synthetic.clip_training import RegionPool

    captions, annotations = _world_json(json_path)
    names = dataset.vocabulary.names
    grid_h, grid_w = -(-size_hw[0] // stride), -(-size_hw[1] // stride)
    centres_y = (np.arange(grid_h) + 0.5) * stride
    centres_x = (np.arange(grid_w) + 0.5) * stride
    scenes, scene_captions, regions, labels = [], [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        height, width = sample["panoptic"].shape
        sy, sx = size_hw[0] / height, size_hw[1] / width
        scenes.append(resize_image(sample["image"], size_hw))
        scene_captions.append(captions[sample["image_id"]])
        scene_regions, scene_labels = [], []
        for segment in sample["segments_info"]:
            name = names[segment["category_id"]]
            if segment["isthing"]:
                annotation = annotations[(sample["image_id"], segment["id"])]
                x, y, w, h = annotation["bbox"]
                inside_y = (centres_y >= y * sy) & (centres_y < (y + h) * sy)
                inside_x = (centres_x >= x * sx) & (centres_x < (x + w) * sx)
                cells = inside_y[:, None] & inside_x[None, :]
                if not cells.any():  # a small box: the cell holding its centre
                    cy = min(int((y + h / 2) * sy // stride), grid_h - 1)
                    cx = min(int((x + w / 2) * sx // stride), grid_w - 1)
                    cells[cy, cx] = True
                colour = annotation.get("colour")
            else:
                mask = sample["panoptic"] == segment["id"]
                ys = np.minimum((np.arange(height) * sy // stride).astype(int), grid_h - 1)
                xs = np.minimum((np.arange(width) * sx // stride).astype(int), grid_w - 1)
                inside = np.zeros((grid_h, grid_w))
                total = np.zeros((grid_h, grid_w))
                np.add.at(inside, (ys[:, None], xs[None, :]), mask)
                np.add.at(total, (ys[:, None], xs[None, :]), 1)
                cells = inside >= 0.9 * total
                if not cells.any():
                    continue
                colour = None
            caption, words = _describe(rng, name, colour)
            scene_regions.append((cells, caption, words))
            scene_labels.append(segment["category_id"])
        regions.append(scene_regions)
        labels.append(scene_labels)
    pool = RegionPool(torch.from_numpy(np.stack(scenes)), regions, scene_captions)
    return pool, labels


def clip_zero_shot(clip, backbone, val_set, val_json, test_hw, novel, rng, *, mean, std) -> dict:
    """The frozen CLIP's zero-shot accuracy on val object / texture crops (image
    classification) and on val box regions of scenes at the test scale (dense features),
    overall, base, novel and per class, with the class names in the ViLD templates."""
    from ovseg.modeling.text_classifier import TextEncoder
    from ovseg.synthetic.clip_training import region_zero_shot_accuracy, zero_shot_accuracy
    from ovseg.vocabulary import load_templates

    vocab = val_set.vocabulary
    embeddings = TextEncoder(backbone, load_templates("vild"), use_disk_cache=False)(
        vocab
    ).embeddings
    crops, _, crop_labels, _ = crop_pairs(val_set, val_json, rng)
    crops_right = zero_shot_accuracy(
        clip, torch.from_numpy(crops), crop_labels, embeddings, mean=mean, std=std
    )
    regions, region_labels = region_pairs(val_set, val_json, test_hw, rng)
    regions_right = region_zero_shot_accuracy(
        clip, regions, region_labels, embeddings, mean=mean, std=std
    )
    region_labels = np.array([label for labels in region_labels for label in labels])
    is_novel = np.asarray(novel)
    result = {"chance": 100 / len(vocab), "crops": int(len(crops_right))}
    for kind, right, labels in (
        ("", crops_right, crop_labels),
        ("regions_", regions_right, region_labels),
    ):
        result[f"{kind}all"] = 100 * right.mean()
        result[f"{kind}base"] = 100 * right[~is_novel[labels]].mean()
        result[f"{kind}novel"] = 100 * right[is_novel[labels]].mean()
        result[f"{kind}per_class"] = {
            vocab.names[c]: 100 * right[labels == c].mean() for c in np.unique(labels)
        }
    _log(
        f"CLIP zero-shot accuracy, val crops: {result['all']:.1f}% (base {result['base']:.1f}, "
        f"novel {result['novel']:.1f}); val regions: {result['regions_all']:.1f}% (base "
        f"{result['regions_base']:.1f}, novel {result['regions_novel']:.1f}); chance "
        f"{result['chance']:.1f}"
    )
    return result


def _log(message: str) -> None:
    print(f"[synthetic world] {message}", file=sys.stderr, flush=True)


def run(out: str | Path, cfg: WorldConfig, *, progress: bool = True) -> dict:
    """Everything: data, CLIP, segmentation training, evaluation, report. Returns the report."""
    from ovseg.checkpoint import load_weights, save_weights
    from ovseg.config import load_config
    from ovseg.data import LargeScaleJitter
    from ovseg.modeling.fcclip import build_model
    from ovseg.preprocess import shortest_edge_size
    from ovseg.synthetic.clip_training import (
        CLIPTrainConfig,
        ImagePool,
        reset_layer_scale,
        train_clip,
    )
    from ovseg.train.loop import TrainConfig, train

    out = Path(out)
    started = time.perf_counter()
    timings = {}
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # 1. the world
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
    base_indices = [i for i, is_novel in enumerate(novel) if not is_novel]
    base_vocab_path = out / "base_vocab.txt"
    base_vocab_path.write_text(
        "".join(
            f"{'thing' if vocab.is_thing[i] else 'stuff'}\t{', '.join(vocab.classes[i])}\n"
            for i in base_indices
        )
    )
    _log(
        f"{cfg.num_train} train / {cfg.num_val} val scenes; novel classes: "
        f"{', '.join(n for n, k in zip(vocab.names, novel, strict=True) if k)}"
    )
    timings["data_s"] = time.perf_counter() - started

    # 2. the CLIP, trained on captions of everything (novel classes included)
    model_cfg = load_config("synthetic_tiny")
    model_cfg.text.train_vocabulary = str(base_vocab_path)
    model = build_model(model_cfg)
    clip, backbone = model.backbone.clip, model.backbone
    mean, std = model_cfg.inference.pixel_mean, model_cfg.inference.pixel_std
    test_hw = shortest_edge_size(*cfg.size, cfg.test_short_side, model_cfg.inference.max_size_test)
    # Scenes at the test scale with their captions and box-region captions, and object /
    # texture crops. Captions saying the same words (in other phrasings) are positives.
    regions, _ = region_pairs(train_set, train_json, test_hw, rng)
    crops, crop_captions, _, crop_words = crop_pairs(train_set, train_json, rng)
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
            mean=mean,
            std=std,
            tokenize=backbone.tokenize,
            progress=progress,
        )
    clip.requires_grad_(False)
    backbone.reset_fingerprint()
    timings["clip_s"] = time.perf_counter() - started - sum(timings.values())
    zero_shot = clip_zero_shot(
        clip, backbone, val_set, val_json, test_hw, novel, rng, mean=mean, std=std
    )

    # 3. ovseg on base classes only, CLIP frozen
    init_path = out / "init_with_clip.safetensors"
    save_weights(model.state_dict(), init_path)
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
    )
    train(
        model_cfg,
        seg_cfg,
        BaseOnlyDataset(train_set, base_indices),
        out / "segmentation",
        transform=LargeScaleJitter(crop_size=cfg.seg_crop, min_scale=0.5, max_scale=1.5),
        init_weights=str(init_path),
        progress=progress,
    )
    timings["segmentation_s"] = time.perf_counter() - started - sum(timings.values())

    # 4. the shipped form (fp16 file), reloaded, is what gets evaluated
    weights_path = out / "synthetic_tiny.safetensors"
    trained = build_model(model_cfg)
    load_weights(trained, out / "segmentation" / "model_final.safetensors")
    save_weights(
        {k: v.half() if v.is_floating_point() else v for k, v in trained.state_dict().items()},
        weights_path,
        metadata={"config": "synthetic_tiny"},
    )
    evaluated = build_model(model_cfg)
    load_weights(evaluated, weights_path)
    report = evaluate_world(evaluated, model_cfg, val_set, novel, cfg, out, progress=progress)
    for name, row in report["per_class"].items():
        row["zero_shot_crops"] = zero_shot["per_class"].get(name, float("nan"))
        row["zero_shot_regions"] = zero_shot["regions_per_class"].get(name, float("nan"))
    report.update(
        config=dataclasses.asdict(cfg),
        zero_shot=zero_shot,
        clip_loss_first_last=[clip_losses[0], clip_losses[-1]],
        novel_classes=[n for n, k in zip(vocab.names, novel, strict=True) if k],
        weights=str(weights_path),
        weights_mib=weights_path.stat().st_size / 2**20,
    )
    timings["evaluation_s"] = time.perf_counter() - started - sum(timings.values())
    timings["total_s"] = time.perf_counter() - started
    report["timings"] = timings
    write_report(out, report)
    return report


def evaluate_world(
    model, model_cfg, val_set, novel, cfg: WorldConfig, out: Path, *, progress: bool
) -> dict:
    """PQ and mIoU (base = seen, novel = unseen) for the three classifier modes, and a
    chance baseline: a uniformly random class for every pixel."""
    from tqdm import tqdm

    from ovseg.evaluation import PanopticEvaluator, SemanticEvaluator
    from ovseg.predictor import OVSegPredictor

    predictor = OVSegPredictor(model, model_cfg, use_disk_text_cache=False)
    vocab = val_set.vocabulary
    predictor.set_vocabulary(vocab)
    seen = [not n for n in novel]
    categories = [
        {"id": i, "name": n, "isthing": t}
        for i, (n, t) in enumerate(zip(vocab.names, vocab.is_thing, strict=True))
    ]
    panoptic = {m: PanopticEvaluator(categories, seen=seen) for m in MODES}
    semantic = {m: SemanticEvaluator(len(vocab), class_names=vocab.names, seen=seen) for m in MODES}
    chance = SemanticEvaluator(len(vocab), class_names=vocab.names, seen=seen)
    rng = np.random.default_rng(12345)
    class_embeddings = predictor.text_encoder(vocab).embeddings
    best_iou = [[] for _ in vocab.names]  # per class: best query IoU of each GT segment
    # per class: the in-vocabulary head right on the query whose mask matches the segment best
    # (masks found but named wrong, or not found at all?)
    in_vocab_on_best = [[] for _ in vocab.names]
    gt_pooled = [[] for _ in vocab.names]  # per class: CLIP right on the pooled true mask
    figure_rows = []
    for index in tqdm(
        range(len(val_set)), desc="evaluating", disable=not progress, file=sys.stderr
    ):
        sample = val_set[index]
        chance.update(rng.integers(0, len(vocab), sample["sem_seg"].shape), sample["sem_seg"])
        row = {"image": sample["image"], "truth": sample["sem_seg"]}
        for mode, (alpha, beta) in MODES.items():
            model.alpha, model.beta = alpha, beta
            result = predictor.predict(
                sample["image"], tasks=("panoptic", "semantic"), short_side=cfg.test_short_side
            )
            if mode == "in_vocab":  # (alpha, beta) = (0, 0): the in-vocabulary head alone
                in_vocab_labels = result["class_logits"][:, :-1].argmax(1).numpy()
            labels = result["sem_seg"].argmax(0).numpy()
            semantic[mode].update(labels, sample["sem_seg"])
            panoptic[mode].update(
                sample["panoptic"],
                sample["segments_info"],
                result["panoptic_seg"].numpy(),
                [{"id": s["id"], "category_id": s["category_id"]} for s in result["segments_info"]],
            )
            row[mode] = labels
        segments = sample["segments_info"]
        if segments:
            ious, best_query, pooled = segment_diagnostics(
                model,
                model_cfg,
                sample["image"],
                np.stack([sample["panoptic"] == s["id"] for s in segments]),
                result["mask_logits"],
                class_embeddings,
                cfg.test_short_side,
            )
            for segment, iou, query, label in zip(segments, ious, best_query, pooled, strict=True):
                best_iou[segment["category_id"]].append(float(iou))
                in_vocab_on_best[segment["category_id"]].append(
                    bool(in_vocab_labels[query] == segment["category_id"])
                )
                gt_pooled[segment["category_id"]].append(bool(label == segment["category_id"]))
        if index < 6:
            figure_rows.append(row)
    model.alpha, model.beta = MODES["ensemble"]
    results = {}
    # How far each class's text embedding is from its nearest other class: both heads
    # classify against these, so two classes whose words embed alike cannot be told apart.
    unit = torch.nn.functional.normalize(class_embeddings.float(), dim=-1)
    cosine = (unit @ unit.T).fill_diagonal_(-2.0)
    nearest_cos, nearest = cosine.max(1)
    per_class = {
        name: {
            "novel": bool(is_novel),
            "segments": len(best_iou[c]),
            "proposal_recall_50": 100 * float(np.mean(np.array(best_iou[c]) >= 0.5)),
            "in_vocab_on_best_mask": 100 * float(np.mean(in_vocab_on_best[c])),
            "clip_on_true_mask": 100 * float(np.mean(gt_pooled[c])),
            "text_nearest": vocab.names[int(nearest[c])],
            "text_nearest_cos": float(nearest_cos[c]),
        }
        for c, (name, is_novel) in enumerate(zip(vocab.names, novel, strict=True))
        if best_iou[c]
    }
    for mode in MODES:
        pq = panoptic[mode].compute()
        miou = semantic[mode].compute()
        results[mode] = {
            "PQ": pq["All"]["pq"],
            "PQ_base": pq["Seen"]["pq"],
            "PQ_novel": pq["Unseen"]["pq"],
            "mIoU": miou["mIoU"],
            "mIoU_base": miou["mIoU_seen"],
            "mIoU_novel": miou["mIoU_unseen"],
        }
        for name, iou in miou["per_class_iou"].items():
            if name in per_class:
                per_class[name][f"IoU_{mode}"] = iou
    chance_miou = chance.compute()
    draw_figure(figure_rows, vocab, out / "predictions.png")
    return {
        "results": results,
        "per_class": per_class,
        "chance": {
            "mIoU": chance_miou["mIoU"],
            "mIoU_base": chance_miou["mIoU_seen"],
            "mIoU_novel": chance_miou["mIoU_unseen"],
        },
        "val_images": len(val_set),
    }


@torch.no_grad()
def segment_diagnostics(
    model,
    model_cfg,
    image: np.ndarray,
    gt_masks: np.ndarray,
    mask_logits: torch.Tensor,
    class_embeddings: torch.Tensor,
    short_side: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Why novel classes are (not) found, per ground-truth segment (S, H, W) of one image:
    the best IoU of any query's mask (are masks proposed?), that query's index, and the class
    the frozen CLIP gives the segment when its TRUE mask is pooled the FC-CLIP way (is the
    CLIP good enough?)."""
    import torch.nn.functional as F

    from ovseg.modeling.postprocess import resize_to_original
    from ovseg.modeling.transformer_decoder import mask_pooling
    from ovseg.preprocess import normalize_and_pad, resize_image, shortest_edge_size

    inf = model_cfg.inference
    height, width = gt_masks.shape[-2:]
    resized_hw = shortest_edge_size(height, width, short_side, inf.max_size_test)
    pixels = normalize_and_pad(
        [resize_image(image, resized_hw)], inf.pixel_mean, inf.pixel_std, inf.size_divisibility
    )
    padded_hw = pixels.shape[-2:]
    queries = F.interpolate(mask_logits[None], size=padded_hw, mode="bilinear")[0]
    queries = resize_to_original(queries, resized_hw, (height, width))
    proposed = (queries > 0).flatten(1).float()
    truth = torch.from_numpy(gt_masks).flatten(1).float()
    intersection = truth @ proposed.T
    union = truth.sum(1, keepdim=True) + proposed.sum(1) - intersection
    best_iou, best_query = (intersection / union.clamp(min=1)).max(1)
    gt = F.interpolate(torch.from_numpy(gt_masks)[None].float(), size=resized_hw, mode="nearest")
    gt_logits = torch.full((1, len(gt_masks), *padded_hw), -1.0)
    gt_logits[..., : resized_hw[0], : resized_hw[1]] = gt * 2 - 1
    dense = model.backbone(pixels)["clip_vis_dense"]
    embeds = F.normalize(model.backbone.project_pooled(mask_pooling(dense, gt_logits)), dim=-1)
    clip_labels = (embeds[0] @ class_embeddings.T).argmax(1).numpy()
    return best_iou.numpy(), best_query.numpy(), clip_labels


def draw_figure(rows: list[dict], vocab, path: Path) -> None:
    """Val scenes: image | ground truth | in-vocab | out-of-vocab | ensemble (class colours)."""
    from PIL import Image, ImageDraw

    from ovseg.visualize import palette

    colours = np.concatenate([palette(len(vocab)), np.zeros((256 - len(vocab), 3), np.uint8)])
    tiles = []
    for row in rows:
        cells = [row["image"]] + [
            colours[np.asarray(row[k]).clip(0, 255)] for k in ("truth", *MODES)
        ]
        tiles.append(np.concatenate(cells, axis=1))
    sheet = Image.fromarray(np.concatenate(tiles, axis=0)) if tiles else Image.new("RGB", (1, 1))
    header = Image.new("RGB", (sheet.width, 16), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    width = sheet.width // 5
    for i, title in enumerate(("image", "truth (black: void)", *MODES)):
        draw.text((i * width + 4, 2), title, fill=(0, 0, 0))
    legend = Image.new("RGB", (sheet.width, 16 * ((len(vocab) + 4) // 5)), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for i, name in enumerate(vocab.names):
        x, y = (i % 5) * width + 4, (i // 5) * 16 + 2
        draw.rectangle([x, y, x + 10, y + 10], fill=tuple(int(c) for c in colours[i]))
        draw.text((x + 14, y), name, fill=(0, 0, 0))
    full = Image.new("RGB", (sheet.width, header.height + sheet.height + legend.height))
    full.paste(header, (0, 0))
    full.paste(sheet, (0, header.height))
    full.paste(legend, (0, header.height + sheet.height))
    full.save(path)


def write_report(out: Path, report: dict) -> None:
    """report.json and report.md (a markdown table)."""
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    lines = [
        "# Synthetic open-vocabulary world",
        "",
        f"Novel classes (never labelled in segmentation training): "
        f"{', '.join(report['novel_classes'])}",
        "",
        "| classifier | PQ | PQ base | PQ novel | mIoU | mIoU base | mIoU novel |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in report["results"].items():
        lines.append(
            f"| {mode} | {r['PQ']:.1f} | {r['PQ_base']:.1f} | {r['PQ_novel']:.1f} | "
            f"{r['mIoU']:.1f} | {r['mIoU_base']:.1f} | {r['mIoU_novel']:.1f} |"
        )
    c = report["chance"]
    lines.append(
        f"| chance (random pixels) | | | | {c['mIoU']:.1f} | {c['mIoU_base']:.1f} | "
        f"{c['mIoU_novel']:.1f} |"
    )
    z = report["zero_shot"]
    lines += [
        "",
        f"CLIP zero-shot accuracy on {z['crops']} val object/texture crops: "
        f"{z['all']:.1f}% (base {z['base']:.1f}%, novel {z['novel']:.1f}%); on the box "
        f"regions of val scenes at the test scale (mean of the dense map over the box, as "
        f"mask pooling does): {z['regions_all']:.1f}% (base {z['regions_base']:.1f}%, novel "
        f"{z['regions_novel']:.1f}%); chance {z['chance']:.1f}%.",
        "",
        "Per class (val): recall of proposals (any query's mask at IoU >= 0.5 with the true "
        "segment), the in-vocabulary head's class for the query whose mask matches best, the "
        "frozen CLIP's class for the true mask pooled the FC-CLIP way, its "
        "zero-shot accuracy on crops and on box regions of the dense map, and IoU per "
        "classifier (%); last, the class whose text embedding is nearest (cosine): both heads "
        "classify against these embeddings.",
        "",
        "| class | proposals | in_vocab on best mask | CLIP on true mask | CLIP crops "
        "| CLIP regions | IoU in_vocab | IoU out_vocab | IoU ensemble | nearest text |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["per_class"].items():
        cells = [
            c.get(k, float("nan"))
            for k in (
                "proposal_recall_50",
                "in_vocab_on_best_mask",
                "clip_on_true_mask",
                "zero_shot_crops",
                "zero_shot_regions",
                "IoU_in_vocab",
                "IoU_out_vocab",
                "IoU_ensemble",
            )
        ]
        label = f"{name} (novel)" if c["novel"] else name
        nearest = f"{c['text_nearest']} ({c['text_nearest_cos']:.2f})"
        lines.append(f"| {label} | " + " | ".join(f"{v:.0f}" for v in cells) + f" | {nearest} |")
    lines += [
        "",
        "Times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items()),
        "",
        "![predictions](predictions.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
