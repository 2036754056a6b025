"""The training loop, top to bottom: build, data, optimizer, resume, loop, log, checkpoint.

Trains the pixel decoder, transformer decoder, in-vocabulary temperature and void embedding
with the CLIP frozen (never in the optimizer, never in checkpoints), on the in-vocabulary
logits of the training vocabulary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ovseg.checkpoint import CLIP_PREFIX, load_state, load_weights, save_weights
from ovseg.config import ModelConfig, config_to_dict
from ovseg.distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    cleanup,
    init_distributed,
)
from ovseg.modeling.fcclip import build_model
from ovseg.modeling.text_classifier import TextClassifier, TextEncoder
from ovseg.train import state as ckpt
from ovseg.train.data import AugmentedSamples, IterationBatchSampler, collate, derived_seed
from ovseg.train.losses import LossConfig, SetCriterion
from ovseg.train.optim import parameter_groups, warmup_poly
from ovseg.train.run_log import RunLog
from ovseg.vocabulary import load_templates

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    max_iters: int = 368750
    batch_size: int = 16  # global: all processes and accumulation steps together
    accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_iters: int = 10
    warmup_factor: float = 1.0
    poly_power: float = 0.9
    clip_grad: float = 0.01  # full-model gradient L2 norm
    amp: str = "none"  # none | bf16 | fp16
    crop_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    num_points: int = 12544
    ignore_void: bool = False  # void pixels out of the mask losses (LossConfig.ignore_void)
    # no no-object loss for unmatched queries mostly on void (LossConfig.void_aware_no_object)
    void_aware_no_object: bool = False
    checkpoint_every: int = 5000
    keep_last: int = 3
    log_every: int = 20
    seed: int = 0
    num_workers: int = 2
    load_clip_weights: bool = True  # open_clip pretrained tag (False: weights from init file)
    # Write the frozen CLIP into the final weights even when open_clip can load it by its
    # pretrained tag (a CLIP that came from anywhere else is always written, or the final
    # weights could not be loaded).
    save_clip: bool = False


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    dataset,
    output_dir: str | Path,
    *,
    transform,
    resume: str | None = None,
    init_weights: str | None = None,
    device: str | None = None,
    tensorboard: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> dict:
    """Train on ``dataset`` (samples as in ovseg.data) and return the final log record.

    ``resume``: "auto" (latest checkpoint in output_dir/checkpoints, if any) or a path.
    Runs under torchrun too: every process calls this; rank 0 logs and saves.
    ``stop_at``: leave after this iteration (with a checkpoint), as an interrupted run would.
    """
    info = init_distributed(device)
    try:
        return _train_process(
            info,
            model_cfg,
            cfg,
            dataset,
            Path(output_dir),
            transform=transform,
            resume=resume,
            init_weights=init_weights,
            tensorboard=tensorboard,
            progress=progress,
            stop_at=stop_at,
        )
    finally:
        # After _train_process has returned, so that its DistributedDataParallel wrapper (which
        # holds the process group) can be freed before the group is left: see cleanup.
        cleanup(info)


def _train_process(
    info: DistInfo,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    dataset,
    output_dir: Path,
    *,
    transform,
    resume: str | None,
    init_weights: str | None,
    tensorboard: bool,
    progress: bool,
    stop_at: int | None,
) -> dict:
    """What every process of ``train`` runs, inside the process group ``info``."""
    checkpoint_dir = output_dir / "checkpoints"
    _check_batch_size(cfg, info)
    _check_run_folder(output_dir, resume)
    amp_dtype = AMP_DTYPES[cfg.amp]
    torch.manual_seed(cfg.seed)

    # ---- model, text classifier of the training vocabulary, losses
    model = _build_model(model_cfg, cfg, info, init_weights=init_weights)
    vocabulary = dataset.vocabulary
    classifier = _text_classifier(model, model_cfg, vocabulary, info.device)
    text_cfg = model_cfg.text_context
    criterion = SetCriterion(
        len(vocabulary),
        LossConfig(
            num_points=cfg.num_points,
            ignore_void=cfg.ignore_void,
            void_aware_no_object=cfg.void_aware_no_object,
            cdt_weight=text_cfg.cdt_loss_weight,
            pixel_text_weight=text_cfg.pixel_text_loss_weight,
        ),
    )
    num_queries = model_cfg.transformer_decoder.num_queries

    # ---- optimizer, schedule, AMP scaler
    optimizer, scheduler, scaler = _build_optimizer(model, cfg, info)

    # ---- resume
    resume_path = ckpt.latest_checkpoint(checkpoint_dir) if resume == "auto" else resume
    start = _restore(model, optimizer, scheduler, scaler, Path(resume_path)) if resume_path else 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    net = DistributedDataParallel(model) if info.enabled else model
    net.train()

    # ---- data: the same global sequence whatever the number of processes or workers
    loader = _build_loader(dataset, transform, cfg, info, start=start)
    mean = torch.tensor(model_cfg.inference.pixel_mean, device=info.device).view(1, 3, 1, 1)
    std = torch.tensor(model_cfg.inference.pixel_std, device=info.device).view(1, 3, 1, 1)

    # ---- logging (rank 0)
    run_log = None
    if info.is_main:
        run_config = _run_config(model_cfg, cfg, vocabulary, info)
        run_log = RunLog(output_dir, run_config, cfg.max_iters, start, tensorboard, progress)

    # ---- the loop: one optimizer step per global batch
    record: dict = {}
    last = cfg.max_iters if stop_at is None else min(stop_at, cfg.max_iters)
    for iteration, batch in zip(range(start, last), loader, strict=False):
        images = (batch["images"].to(info.device).float() - mean) / std
        terms = _forward_backward(
            net, classifier, criterion, scaler, images, batch, num_queries, amp_dtype, cfg, info
        )
        grad_norm = _optimizer_step(optimizer, scheduler, scaler, trainable, cfg.clip_grad)
        done = iteration + 1

        logging_now = done % cfg.log_every == 0 or done == last
        if logging_now:  # every process takes part: the logged losses are the global batch's
            terms = all_reduce_mean(terms, info)
        if info.is_main:
            run_log.step(cfg.batch_size)
            if logging_now:
                record = run_log.write(done, optimizer, criterion, grad_norm, terms)
            if done % cfg.checkpoint_every == 0 or done == last:
                _save_checkpoint(checkpoint_dir, done, net, optimizer, scheduler, scaler, cfg)

    if info.is_main and last == cfg.max_iters:
        _save_final_weights(output_dir, net, model_cfg, cfg, init_weights=init_weights)
    if info.is_main:
        run_log.close()
    return record


def _check_run_folder(output_dir: Path, resume: str | None) -> None:
    """A folder that holds a run is continued only on purpose: starting over in it would
    interleave two runs' log.jsonl and replace their checkpoints and final weights."""
    if resume is not None:
        return
    earlier = ckpt.latest_checkpoint(output_dir / "checkpoints")
    final = output_dir / "model_final.safetensors"
    found = earlier or (final if final.is_file() else None)
    if found is not None:
        raise ValueError(
            f"{output_dir} already holds a training run ({found.name}): continue it with "
            "--resume, or give a new --output"
        )


def _check_batch_size(cfg: TrainConfig, info: DistInfo) -> None:
    """Every process and every micro-batch gets the same number of images."""
    if cfg.batch_size % (info.world_size * cfg.accum_steps):
        raise ValueError(
            f"--batch-size {cfg.batch_size} must be divisible by processes x "
            f"accumulation steps ({info.world_size} x {cfg.accum_steps})"
        )


def _build_model(model_cfg: ModelConfig, cfg: TrainConfig, info: DistInfo, *, init_weights):
    """FC-CLIP on ``info.device``, its CLIP from the pretrained tag or from ``init_weights``."""
    model = build_model(model_cfg, load_clip_weights=cfg.load_clip_weights and not init_weights)
    if init_weights:
        load_weights(model, init_weights, clip_loaded=cfg.load_clip_weights)
    model.to(info.device)
    if (
        info.is_main
        and not init_weights
        and not (cfg.load_clip_weights and model_cfg.clip.pretrained)
    ):
        print(
            "ovseg: the frozen CLIP has RANDOM weights (no pretrained tag loaded and no "
            "--init-weights): fine for tests and benchmarks, not for real training",
            file=sys.stderr,
        )
    return model


def _text_classifier(model, model_cfg: ModelConfig, vocabulary, device) -> TextClassifier:
    """The training vocabulary's text embeddings, from the model's own frozen CLIP. With a
    learned context it also carries the prompts' tokens: the model recomputes the embeddings
    in every forward, so that gradients reach the context."""
    context = None if model.text_context is None else model.text_context.context
    encoder = TextEncoder(
        model.backbone,
        load_templates(model_cfg.text.templates),
        batch_size=model_cfg.text.batch_size,
        use_disk_cache=context is None,
        context=context,
    )
    classifier = encoder(vocabulary)
    if context is not None:
        tokens = context.tokens(model.backbone, vocabulary.synonyms)
        classifier = TextClassifier(classifier.embeddings, classifier.num_synonyms, tokens)
    return classifier.to(device)


def _build_optimizer(model, cfg: TrainConfig, info: DistInfo):
    """AdamW over the trainable parameters, warmup + poly schedule, AMP scaler (fp16 only)."""
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: warmup_poly(
            it,
            max_iters=cfg.max_iters,
            warmup_iters=cfg.warmup_iters,
            warmup_factor=cfg.warmup_factor,
            power=cfg.poly_power,
        ),
    )
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.amp == "fp16")
    return optimizer, scheduler, scaler


def _restore(model, optimizer, scheduler, scaler, path: Path) -> int:
    """Load the training checkpoint ``path`` in place; return the iteration to go on from."""
    state = ckpt.load_training_state(path)
    load_state(  # the frozen CLIP is not in training checkpoints
        model,
        state["model"],
        source=str(path),
        optional_prefix=CLIP_PREFIX,
        hint="it was saved for another architecture: resume with the config it was trained with",
    )
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["iteration"])


def _build_loader(dataset, transform, cfg: TrainConfig, info: DistInfo, *, start: int):
    """This process's share of each global batch, from iteration ``start`` on."""
    sampler = IterationBatchSampler(
        len(dataset),
        cfg.batch_size,
        seed=cfg.seed,
        start_iteration=start,
        max_iterations=cfg.max_iters,
        rank=info.rank,
        world_size=info.world_size,
    )
    return torch.utils.data.DataLoader(
        AugmentedSamples(dataset, transform, cfg.seed),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
    )


def _forward_backward(
    net,
    classifier: torch.Tensor,
    criterion: SetCriterion,
    scaler,
    images: torch.Tensor,
    batch: dict,
    num_queries: int,
    amp_dtype: torch.dtype | None,
    cfg: TrainConfig,
    info: DistInfo,
) -> dict[str, float]:
    """Accumulate the gradients of this process's share of one global batch.

    images: (B, 3, H, W) normalised, B = this process's share. Runs cfg.accum_steps
    micro-batches, synchronising gradients across processes on the last one only.
    Returns each loss term summed over the micro-batches.
    """
    targets = [{k: v.to(info.device) for k, v in t.items()} for t in batch["targets"]]
    generators = [
        torch.Generator().manual_seed(derived_seed(cfg.seed, "points", p))
        for p in batch["positions"]
    ]
    # Loss normalisers over the whole global batch (all processes, all micro-batches).
    global_targets = all_reduce_sum(sum(len(t["labels"]) for t in targets), info)
    num_masks = max(global_targets / info.world_size, 1.0)
    weight_total = (
        criterion.class_weight_sum(num_queries, cfg.batch_size, int(global_targets))
        / info.world_size
    )
    micro = len(targets) // cfg.accum_steps
    terms: dict[str, float] = {}
    for step in range(cfg.accum_steps):
        part = slice(step * micro, (step + 1) * micro)
        sync = step == cfg.accum_steps - 1 or not info.enabled
        context = net.no_sync() if not sync else contextlib.nullcontext()
        with context:
            with torch.autocast(
                info.device.type,
                dtype=amp_dtype or torch.float32,
                enabled=amp_dtype is not None,
            ):
                outputs = net(images[part], classifier)
            losses = criterion(
                outputs,
                targets[part],
                num_masks=num_masks,
                class_weight_total=weight_total,
                generators=generators[part],
            )
            total = criterion.total(losses)
            scaler.scale(total).backward()
        for name, value in losses.items():
            terms[name] = terms.get(name, 0.0) + float(value.detach())
    return terms


def _optimizer_step(
    optimizer, scheduler, scaler, trainable: list, clip_grad: float
) -> torch.Tensor:
    """Unscale, clip the full-model gradient L2 norm to ``clip_grad``, step; return that norm."""
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return grad_norm


def _save_checkpoint(checkpoint_dir: Path, done: int, net, optimizer, scheduler, scaler, cfg):
    """Everything ``_restore`` needs to go on from iteration ``done``; the CLIP stays out."""
    ckpt.save_training_state(
        checkpoint_dir,
        done,
        {
            "model": ckpt.trainable_state(_unwrap(net)),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": done,
            "torch_rng": torch.get_rng_state(),
        },
        keep_last=cfg.keep_last,
    )


def _run_config(model_cfg: ModelConfig, cfg: TrainConfig, vocabulary, info: DistInfo) -> dict:
    """config.json of the run folder."""
    return {
        "model": config_to_dict(model_cfg),
        "train": dataclasses.asdict(cfg),
        "classes": vocabulary.names,
        "world_size": info.world_size,
    }


def _save_final_weights(
    output_dir: Path, net, model_cfg: ModelConfig, cfg: TrainConfig, *, init_weights
) -> None:
    """The finished run's weights, as predictors load them: with the frozen CLIP whenever it
    did not come from an open_clip tag (nothing else could give it back), or if asked."""
    clip_from_tag = cfg.load_clip_weights and model_cfg.clip.pretrained and not init_weights
    include_clip = cfg.save_clip or not clip_from_tag
    save_weights(
        _unwrap(net).state_dict(),
        output_dir / "model_final.safetensors",
        include_clip=include_clip,
        metadata={"config": model_cfg.name},
    )


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model
