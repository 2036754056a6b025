"""Training the prompt head on the frozen CLIP: supervised from panoptic masks, or distilled
from a SAM teacher; and a whole small SAM trained the same way (a teacher for the synthetic
world). Reads top to bottom: prompts, losses, one step, the models, the loop.

Supervised (SAM's recipe at small scale): per image up to ``masks_per_image`` segments, each
prompted by one point (its centre, the interior point farthest from the edge, or a random
interior point) or a jittered box (noise of 10% of the side, at most 20 px); loss = focal x
``focal_weight`` (SAM: 20; default 0, see the config) + dice on the best of the three
ambiguity-aware masks for a single point (on the one mask for a box), + MSE between the
predicted and the true IoU of every output; then, with probability ``correction_rate``, one
correction click sampled in the error region (positive where the object was missed, negative
where it spilled over) with the previous mask logits as the mask prompt, and the same loss
again. Distillation: the same prompts, with the teacher SAM's masks
for them as the targets. The CLIP is never trained; only the head's parameters get gradients.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ovseg.modeling.prompt_head import PromptDecoder, head_inputs
from ovseg.preprocess import normalize_and_pad, resize_image


@dataclass
class PromptTrainConfig:
    iterations: int = 1500
    batch_size: int = 4  # images per step
    masks_per_image: int = 6
    lr: float = 1e-3
    weight_decay: float = 0.05
    box_rate: float = 0.4  # share of box prompts (the rest: points)
    centre_rate: float = 0.4  # share of point prompts at the segment's centre
    correction_rate: float = 0.5
    # SAM's 20:1 focal:dice collapses a small head trained from scratch to empty masks for
    # long (synthetic world, 300 iterations, mean IoU: focal 20 -> 0.12, 2 -> 0.32, 0 -> 0.40).
    focal_weight: float = 0.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    min_area: int = 16  # pixels at the network input
    seed: int = 0
    checkpoint_every: int = 250


def focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017, as in SAM), mean over pixels: (N, P) -> (N,)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(-1)


def dice_loss(logits, targets) -> torch.Tensor:
    """1 - soft dice (V-Net), (N, P) -> (N,)."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def mask_iou(logits, targets) -> torch.Tensor:
    """IoU of the binarised logits with the targets: (N, P) -> (N,)."""
    pred = logits > 0
    target = targets > 0.5
    union = (pred | target).sum(-1)
    return torch.where(union > 0, (pred & target).sum(-1) / union.clamp(min=1), 1.0)


def prompt_loss(logits, iou_pred, targets, cfg: PromptTrainConfig):
    """logits (N, M, h, w), iou_pred (N, M), targets (N, h, w) -> (loss, best output (N,),
    IoU of the best output (N,)). The mask loss counts only the best of the M outputs."""
    n, m = logits.shape[:2]
    flat = logits.flatten(2)
    target = targets.flatten(1)[:, None].expand(n, m, -1)
    per_output = cfg.focal_weight * focal_loss(flat, target) + cfg.dice_weight * dice_loss(
        flat, target
    )
    best = per_output.argmin(1)
    true_iou = mask_iou(flat, target).detach()
    loss = per_output.gather(1, best[:, None]).mean() + cfg.iou_weight * F.mse_loss(
        iou_pred, true_iou
    )
    return loss, best, true_iou.gather(1, best[:, None])[:, 0]


def centre_point(mask: np.ndarray) -> tuple[float, float]:
    """The interior point farthest from the mask's edge (x, y): a click at an object's middle."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return float(x), float(y)


def random_point(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(xs)))
    return float(xs[i]), float(ys[i])


def jittered_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask's box with each side moved by noise of 10% of the side (at most 20 px)."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
    w, h = box[2] - box[0], box[3] - box[1]
    noise = rng.normal(0, 1, 4) * np.minimum(0.1 * np.array([w, h, w, h]), 20)
    box = box + noise
    height, width = mask.shape
    box[[0, 2]] = box[[0, 2]].clip(0, width)
    box[[1, 3]] = box[[1, 3]].clip(0, height)
    box[2] = max(box[2], box[0] + 1)
    box[3] = max(box[3], box[1] + 1)
    return box


def correction_clicks(logits, targets, rng: np.random.Generator):
    """One click per mask in its error region: (N, h, w) logits and targets -> points (N, 2)
    in mask cells (x, y) and labels (N,) (1 where the object was missed, 0 where the mask
    spills over; a perfect mask gets a positive click inside the target)."""
    points, labels = [], []
    for pred, target in zip((logits > 0).cpu().numpy(), (targets > 0.5).cpu().numpy(), strict=True):
        missed, spilled = target & ~pred, pred & ~target
        region, label = (missed, 1) if missed.sum() >= spilled.sum() else (spilled, 0)
        if not region.any():
            region, label = target, 1
        if not region.any():
            region, label = np.ones_like(target), 0
        points.append(random_point(region, rng))
        labels.append(label)
    return np.asarray(points, dtype=np.float32), np.asarray(labels, dtype=np.int64)


def sample_prompts(masks: np.ndarray, cfg: PromptTrainConfig, rng: np.random.Generator):
    """Per chosen segment of (S, H, W) bool masks (network input size): (index, kind, value)
    with kind "point" (value (x, y)) or "box" (value (4,))."""
    if len(masks) == 0:
        return []
    areas = masks.reshape(len(masks), -1).sum(1)
    candidates = np.flatnonzero(areas >= cfg.min_area)
    chosen = rng.permutation(candidates)[: cfg.masks_per_image]
    prompts = []
    for index in chosen:
        if rng.random() < cfg.box_rate:
            prompts.append((int(index), "box", jittered_box(masks[index], rng)))
        elif rng.random() < cfg.centre_rate:
            prompts.append((int(index), "point", centre_point(masks[index])))
        else:
            prompts.append((int(index), "point", random_point(masks[index], rng)))
    return prompts


def low_res_targets(masks: np.ndarray, padded_hw, device, stride: int) -> torch.Tensor:
    """(S, H, W) bool at the network input -> (S, Hp/s, Wp/s) float {0, 1}: padded, then the
    area share of each cell of the mask stride s above one half."""
    full = torch.zeros((len(masks), *padded_hw), device=device)
    full[:, : masks.shape[1], : masks.shape[2]] = torch.from_numpy(masks).float()
    low = F.avg_pool2d(full[None], stride)[0] if stride > 1 else full
    return (low > 0.5).float()


def image_step(head, embedding, padded_hw, masks, cfg, rng, teacher=None, image=None):
    """The losses of one image's prompts. masks (S, H, W) bool at the network input (targets;
    ignored with a ``teacher``, whose masks for the same prompts are the targets instead)."""
    prompts = sample_prompts(masks, cfg, rng)
    if not prompts:
        return None, []
    device = embedding.device
    targets_all = low_res_targets(masks, padded_hw, device, head.mask_stride)
    losses, ious = [], []
    for kind in ("point", "box"):
        group = [p for p in prompts if p[1] == kind]
        if not group:
            continue
        values = torch.tensor(np.asarray([p[2] for p in group]), dtype=torch.float32, device=device)
        if teacher is not None:
            targets = teacher_targets(teacher, image, group, padded_hw, device, head.mask_stride)
        else:
            targets = targets_all[[p[0] for p in group]]
        kwargs = (
            {"points": values[:, None], "point_labels": torch.ones(len(group), 1, device=device)}
            if kind == "point"
            else {"boxes": values}
        )
        logits, iou_pred = head(embedding, input_hw=padded_hw, multimask=kind == "point", **kwargs)
        loss, best, best_iou = prompt_loss(logits, iou_pred, targets, cfg)
        losses.append(loss)
        ious.extend(best_iou.tolist())
        if rng.random() < cfg.correction_rate:
            previous = logits[torch.arange(len(group)), best][:, None].detach()
            clicks, labels = correction_clicks(previous[:, 0], targets, rng)
            # a cell's centre in pixels (SAM adds the last half pixel)
            clicks = (
                torch.from_numpy(clicks).to(device) * head.mask_stride + (head.mask_stride - 1) / 2
            )
            labels = torch.from_numpy(labels).to(device)
            if kind == "point":
                points = torch.cat([values[:, None], clicks[:, None]], 1)
                point_labels = torch.cat(
                    [torch.ones(len(group), 1, device=device), labels[:, None]], 1
                )
                extra = {"points": points, "point_labels": point_labels}
            else:
                extra = {
                    "boxes": values,
                    "points": clicks[:, None],
                    "point_labels": labels[:, None],
                }
            logits, iou_pred = head(
                embedding, input_hw=padded_hw, mask_inputs=previous, multimask=False, **extra
            )
            losses.append(prompt_loss(logits, iou_pred, targets, cfg)[0])
    return torch.stack(losses).mean(), ious


def teacher_targets(teacher, image: np.ndarray, group, padded_hw, device, stride) -> torch.Tensor:
    """The teacher SAM's masks (a :class:`ovseg.sam.masks.SamMasks`) for the prompts of
    ``group`` on the network-input image, as targets at the mask stride."""
    from ovseg.sam.prompts import make_prompts

    masks = []
    for _, kind, value in group:
        if kind == "point":
            prompts = make_prompts([value], [1])
        else:
            prompts = make_prompts(None, None, [value])
        masks.append(teacher.prompted(image, prompts).masks[0])
    return low_res_targets(np.stack(masks), padded_hw, device, stride)


class SamPromptModel(PromptDecoder):
    """A whole ``segment_anything`` ``Sam`` (image encoder included) as a trainable prompt
    model: the same training step as the head, the SAM's own image encoder in place of the
    neck on the frozen CLIP. Its state dict is the ``Sam``'s (loadable by
    :func:`ovseg.sam.zoo.load_sam`)."""

    def __init__(self, sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.box_embed = None
        self.mask_stride = self.image_encoder.patch_embed.proj.stride[0] // 4
        self.register_buffer("pixel_mean", sam.pixel_mean.clone(), persistent=False)
        self.register_buffer("pixel_std", sam.pixel_std.clone(), persistent=False)

    def embed_batch(self, samples, device):
        """Samples -> (image embeddings (B, C, S/16, S/16) with gradients, padded (S, S), per
        sample (resized image, masks at it)): SAM's preprocessing, the longest side resized to
        its input size S, normalised, padded at the bottom right."""
        size = self.image_encoder.img_size
        arrays, per_sample = [], []
        for sample in samples:
            image = sample["image"]
            scale = size / max(image.shape[:2])
            hw = (int(image.shape[0] * scale + 0.5), int(image.shape[1] * scale + 0.5))
            resized = resize_image(image, hw)
            per_sample.append((resized, _resize_masks(sample["masks"], hw)))
            arrays.append(resized)
        mean = self.pixel_mean.flatten().tolist()
        std = self.pixel_std.flatten().tolist()
        pixels = normalize_and_pad(arrays, mean, std, size).to(device)  # (B, 3, S, S)
        return self.image_encoder(pixels), (size, size), per_sample


def _resize_masks(masks: np.ndarray, hw) -> np.ndarray:
    if not len(masks):
        return masks
    resized = F.interpolate(torch.from_numpy(masks)[None].float(), size=hw, mode="nearest")[0]
    return resized.bool().numpy()


def network_inputs(predictor, samples):
    """Samples of a panoptic dataset -> (pixels (B, 3, Hp, Wp), per sample (resized image,
    masks (S, h, w) bool at the network input))."""
    inf = predictor.cfg.inference
    arrays, per_sample = [], []
    for sample in samples:
        image = sample["image"]
        hw = predictor.network_input_size(*image.shape[:2])
        resized = resize_image(image, hw)
        arrays.append(resized)
        per_sample.append((resized, _resize_masks(sample["masks"], hw)))
    pixels = normalize_and_pad(arrays, inf.pixel_mean, inf.pixel_std, inf.size_divisibility)
    return pixels.to(predictor.device), per_sample


def train_prompt_head(
    predictor,
    dataset,
    out_dir: str | Path,
    cfg: PromptTrainConfig,
    *,
    teacher=None,
    resume: bool = True,
    stop_after: int | None = None,
    log=print,
) -> dict:
    """Train ``predictor.model.prompt_head`` (the rest frozen) on ``dataset`` (a panoptic
    dataset: samples with ``image`` and ``masks``). Checkpoints go to ``out_dir`` every
    ``cfg.checkpoint_every`` iterations (atomic; the run resumes from the last one when
    ``resume``; ``stop_after`` ends the run early at that iteration, with a checkpoint, as an
    interruption would); returns {"iterations", "losses" [(iteration, loss, mean IoU)]}."""
    head = predictor.model.prompt_head
    if head is None:
        raise ValueError("the model has no prompt head: use a config with prompt_head.enabled")

    def embed_batch(samples):
        pixels, per_sample = network_inputs(predictor, samples)
        with torch.no_grad():  # the CLIP and the pixel decoder stay frozen
            features = head_inputs(predictor.model, pixels)
        return head.embed_image(features), tuple(pixels.shape[-2:]), per_sample

    return _train(head, embed_batch, dataset, out_dir, cfg, teacher, resume, stop_after, log)


def train_sam(
    sam,
    dataset,
    out_dir: str | Path,
    cfg: PromptTrainConfig,
    *,
    resume: bool = True,
    stop_after: int | None = None,
    log=print,
) -> dict:
    """Train a whole ``Sam`` (all of it, from its current weights) on ``dataset`` with the
    prompt head's recipe (:class:`SamPromptModel`): e.g. a small SAM teacher for distillation
    in the synthetic world. Checkpoints and the return value as :func:`train_prompt_head`."""
    model = SamPromptModel(sam)
    device = next(model.parameters()).device

    def embed_batch(samples):
        return model.embed_batch(samples, device)

    result = _train(model, embed_batch, dataset, out_dir, cfg, None, resume, stop_after, log)
    sam.eval()
    return result


def _train(model, embed_batch, dataset, out_dir, cfg, teacher, resume, stop_after, log) -> dict:
    """The loop of :func:`train_prompt_head` / :func:`train_sam`: ``embed_batch(samples)`` ->
    (embeddings (B, C, h, w), padded (H, W), per sample (image, masks)); ``model`` a
    :class:`PromptDecoder` whose parameters are all trained."""
    from ovseg.checkpoint import load_state
    from ovseg.train.state import latest_checkpoint, load_training_state, save_training_state

    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    last = latest_checkpoint(out_dir) if resume else None
    if last is not None:
        state = load_training_state(last)
        load_state(
            model,
            state["model"],
            source=str(last),
            hint="it was saved with other settings: resume with those, or start again",
        )
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["iteration"]), [tuple(r) for r in state["history"].tolist()]
        log(f"resuming from {last} (iteration {start})", file=sys.stderr)
    end = cfg.iterations if stop_after is None else min(stop_after, cfg.iterations)
    for iteration in range(start, end):
        # Data and prompts depend on (seed, iteration) only: resuming replays the same run.
        rng = np.random.default_rng([cfg.seed, iteration])
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * iteration / cfg.iterations))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = rng.choice(len(dataset), size=min(cfg.batch_size, len(dataset)), replace=False)
        embeddings, padded_hw, per_sample = embed_batch([dataset[int(i)] for i in index])
        losses, ious = [], []
        for b, (image, masks) in enumerate(per_sample):
            loss, image_ious = image_step(
                model, embeddings[b : b + 1], padded_hw, masks, cfg, rng, teacher, image
            )
            if loss is not None:
                losses.append(loss)
                ious.extend(image_ious)
        if not losses:
            continue
        loss = torch.stack(losses).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append((iteration + 1, float(loss.detach()), float(np.mean(ious))))
        if (iteration + 1) % 50 == 0 or iteration + 1 == cfg.iterations:
            recent = np.asarray(history[-50:])
            log(
                f"iter {iteration + 1}/{cfg.iterations} loss {recent[:, 1].mean():.4f} "
                f"mask IoU {recent[:, 2].mean():.3f} lr {lr:.2e}",
                file=sys.stderr,
            )
        if (iteration + 1) % cfg.checkpoint_every == 0 or iteration + 1 == end:
            save_training_state(
                out_dir,
                iteration + 1,
                {
                    "model": model.state_dict(),  # the trained part only
                    "optimizer": optimizer.state_dict(),
                    "iteration": iteration + 1,
                    "history": torch.tensor(history, dtype=torch.float64).reshape(-1, 3),
                    "config": {k: str(v) for k, v in asdict(cfg).items()},
                },
            )
    model.eval()
    return {"iterations": end, "losses": history}
