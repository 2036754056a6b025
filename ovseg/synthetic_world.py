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

from ovseg.data import CATEGORIES, PanopticDataset, base_novel_split, write_synthetic_panoptic
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
    split_seed: int = 0
    seed: int = 0
    clip_steps: int = 2000
    seg_iters: int = 2200
    seg_batch: int = 4
    seg_crop: int = 256
    test_short_side: int = 256

    @classmethod
    def quick(cls) -> WorldConfig:
        return cls(num_train=300, num_val=40, clip_steps=300, seg_iters=250)


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


def caption_pairs(dataset: PanopticDataset, json_path: Path, rng: np.random.Generator):
    """(scenes, scene captions), (crops, crop captions, crop class indices, the words each
    crop caption says: the object, with or without its colour) of a split."""
    raw = json.loads(Path(json_path).read_text())
    captions = {im["id"]: im["caption"] for im in raw["images"]}
    colours = {
        (a["image_id"], s["id"]): s.get("colour")
        for a in raw["annotations"]
        for s in a["segments_info"]
    }
    names = dataset.vocabulary.names
    scenes, scene_captions, crops, crop_captions, crop_labels, crop_words = [], [], [], [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        scenes.append(sample["image"])
        scene_captions.append(captions[sample["image_id"]])
        for segment in sample["segments_info"]:
            mask = sample["panoptic"] == segment["id"]
            name = names[segment["category_id"]]
            if segment["isthing"]:
                ys, xs = np.nonzero(mask)
                box = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
                colour = colours.get((sample["image_id"], segment["id"]))
                words = f"{colour} {name}" if colour and rng.random() < 0.3 else name
                crops.append(_square_crop(sample["image"], box))
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
                words = name
            template = CROP_CAPTIONS[int(rng.integers(len(CROP_CAPTIONS)))]
            crop_captions.append(template.format(words))
            crop_labels.append(segment["category_id"])
            crop_words.append(words)
    return (np.stack(scenes), scene_captions), (
        np.stack(crops),
        crop_captions,
        np.array(crop_labels),
        crop_words,
    )


def _log(message: str) -> None:
    print(f"[synthetic world] {message}", file=sys.stderr, flush=True)


def run(out: str | Path, cfg: WorldConfig, *, progress: bool = True) -> dict:
    """Everything: data, CLIP, segmentation training, evaluation, report. Returns the report."""
    from ovseg.checkpoint import load_weights, save_weights
    from ovseg.clip_training import CLIPTrainConfig, train_clip, zero_shot_accuracy
    from ovseg.config import load_config
    from ovseg.data import LargeScaleJitter
    from ovseg.modeling.fcclip import build_model
    from ovseg.modeling.text_classifier import TextEncoder
    from ovseg.train.loop import TrainConfig, train
    from ovseg.vocabulary import load_templates

    out = Path(out)
    started = time.perf_counter()
    timings = {}
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # 1. the world
    data = out / "data"
    train_json = write_synthetic_panoptic(
        data, cfg.num_train, size=cfg.size, seed=cfg.seed, split="train"
    )
    val_json = write_synthetic_panoptic(
        data, cfg.num_val, size=cfg.size, seed=cfg.seed, split="val"
    )
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
    (scenes, scene_captions), (crops, crop_captions, _, crop_words) = caption_pairs(
        train_set, train_json, rng
    )
    clip.requires_grad_(True)  # the backbone froze it; it is frozen again right after
    # A crop's caption says its words in one of several phrasings: captions saying the same
    # words are positives of each other, not negatives.
    clip_losses = train_clip(
        clip,
        [
            (torch.from_numpy(scenes), scene_captions, None),
            (torch.from_numpy(crops), crop_captions, crop_words),
        ],
        CLIPTrainConfig(steps=cfg.clip_steps, seed=cfg.seed),
        mean=mean,
        std=std,
        tokenize=backbone.tokenize,
        progress=progress,
    )
    clip.requires_grad_(False)
    backbone.reset_fingerprint()
    timings["clip_s"] = time.perf_counter() - started - sum(timings.values())
    _, (val_crops, _, val_labels, _) = caption_pairs(val_set, val_json, rng)
    encoder = TextEncoder(backbone, load_templates("vild"), use_disk_cache=False)
    class_embeddings = encoder(vocab)
    # One embedding per class: the first synonym (each synthetic class has one name).
    correct = zero_shot_accuracy(
        clip,
        torch.from_numpy(val_crops),
        val_labels,
        class_embeddings.embeddings,
        mean=mean,
        std=std,
    )
    crop_is_novel = np.array([novel[label] for label in val_labels])
    zero_shot = {
        "all": 100 * correct.mean(),
        "base": 100 * correct[~crop_is_novel].mean(),
        "novel": 100 * correct[crop_is_novel].mean(),
        "crops": int(len(correct)),
        "chance": 100 / len(vocab),
    }
    _log(
        f"CLIP zero-shot accuracy on val crops: {zero_shot['all']:.1f}% "
        f"(base {zero_shot['base']:.1f}, novel {zero_shot['novel']:.1f}, chance "
        f"{zero_shot['chance']:.1f})"
    )

    # 3. ovseg on base classes only, CLIP frozen
    init_path = out / "init_with_clip.safetensors"
    save_weights(model.state_dict(), init_path)
    seg_cfg = TrainConfig(
        max_iters=cfg.seg_iters,
        batch_size=cfg.seg_batch,
        lr=2e-4,
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
            labels = result["sem_seg"].argmax(0).numpy()
            semantic[mode].update(labels, sample["sem_seg"])
            panoptic[mode].update(
                sample["panoptic"],
                sample["segments_info"],
                result["panoptic_seg"].numpy(),
                [{"id": s["id"], "category_id": s["category_id"]} for s in result["segments_info"]],
            )
            row[mode] = labels
        if index < 6:
            figure_rows.append(row)
    model.alpha, model.beta = MODES["ensemble"]
    results = {}
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
    chance_miou = chance.compute()
    draw_figure(figure_rows, vocab, out / "predictions.png")
    return {
        "results": results,
        "chance": {
            "mIoU": chance_miou["mIoU"],
            "mIoU_base": chance_miou["mIoU_seen"],
            "mIoU_novel": chance_miou["mIoU_unseen"],
        },
        "val_images": len(val_set),
    }


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
        f"{z['all']:.1f}% (base {z['base']:.1f}%, novel {z['novel']:.1f}%, chance "
        f"{z['chance']:.1f}%).",
        "",
        "Times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items()),
        "",
        "![predictions](predictions.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
