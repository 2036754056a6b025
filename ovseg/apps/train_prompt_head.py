"""``ovseg train-prompt-head`` (and ``tools/train_prompt_head.py``): train SAM's prompt encoder
and mask decoder on a model's frozen CLIP, supervised from panoptic masks or distilled from a
SAM teacher. Writes OUT/model.safetensors + OUT/config.yaml (the model with its prompt head:
``ovseg predict --weights OUT/model.safetensors --config OUT/config.yaml --points ...``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ovseg.sam.training import PromptTrainConfig


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from ovseg.apps.arguments import add_dataset_arguments

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a prompt head (SAM's prompt encoder + mask decoder on the frozen "
        "CLIP's features) for a model; the model itself is not changed.",
    )
    parser.add_argument(
        "--model", default="synthetic_tiny", help="zoo model (default: %(default)s)"
    )
    parser.add_argument("--weights", help="the model's weights file instead of the zoo's")
    parser.add_argument("--config", help="the model's config preset or YAML, with --weights")
    parser.add_argument("--output", required=True, help="run directory")
    parser.add_argument(
        "--synthetic-world",
        type=int,
        metavar="SCENES",
        help="train on this many synthetic-world scenes (base classes only: the world's novel "
        "things stay unseen), written into OUTPUT/data",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--embed-dim", type=int, default=None, help="head width (default: config)")
    parser.add_argument(
        "--in-features",
        help="comma-separated maps the neck reads: res2..res5 (the frozen CLIP) and "
        "mask_features (the pixel decoder's) (default: config, res3,res4,res5)",
    )
    parser.add_argument("--decoder-mlp-dim", type=int, default=None)
    parser.add_argument(
        "--embedding-stride", type=int, default=None, help="8, 16 (SAM's) or 32 (default: config)"
    )
    parser.add_argument("--decoder-num-heads", type=int, default=None)
    parser.add_argument(
        "--dense-box",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a box also marks the embedding cells it covers (default: config, on)",
    )
    parser.add_argument(
        "--teacher-sam",
        help="distil from this SAM (vit_b / vit_l / vit_h / tiny) instead of the dataset's masks",
    )
    parser.add_argument("--teacher-weights", help="the teacher SAM's checkpoint")
    parser.add_argument(
        "--train-sam",
        metavar="ARCH",
        help="train a whole SAM of this architecture instead (e.g. tiny: image encoder "
        "included, initialised by --seed), writing OUTPUT/sam_ARCH.safetensors: a teacher for "
        "--teacher-sam ARCH --teacher-weights, or SAM masks with --sam-model ARCH --sam-weights",
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="start again, ignoring checkpoints"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    defaults = PromptTrainConfig()
    for field in dataclasses.fields(PromptTrainConfig):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(getattr(defaults, field.name)),
            default=getattr(defaults, field.name),
            help="(default: %(default)s)",
        )
    return parser


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    from ovseg.apps.outputs import writable_folder

    try:
        with writable_folder(args.output):  # before any work
            return run(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def synthetic_training_set(root: Path, scenes: int):
    """The synthetic world's training scenes (the shipped model's: seed 0, 128x160), base
    classes only."""
    from ovseg.data import PanopticDataset
    from ovseg.synthetic.config import WorldConfig
    from ovseg.synthetic.scenes import CATEGORIES, base_novel_split, write_synthetic_panoptic
    from ovseg.synthetic.world import BaseOnlyDataset

    world = WorldConfig()
    json_path = root / "train" / "panoptic.json"
    if not json_path.is_file() or len(json.loads(json_path.read_text())["images"]) != scenes:
        json_path = write_synthetic_panoptic(
            root, scenes, split="train", size=world.size, seed=world.seed, patterns=world.patterns
        )
    dataset = PanopticDataset(json_path.parent / "images", json_path, json_path.parent / "panoptic")
    novel = set(base_novel_split(world.novel_things, world.novel_stuff, seed=world.split_seed))
    return BaseOnlyDataset(dataset, [i for i, c in enumerate(CATEGORIES) if c.id not in novel])


def load_base_predictor(model: str, weights, config, device):
    """The model as an fp32 predictor, and its config (a prompt head it has is replaced by a
    new one in :func:`run`)."""
    from ovseg import model_zoo
    from ovseg.config import load_config
    from ovseg.predictor import OVSegPredictor

    cfg = load_config(config or model_zoo.get_entry(model).config)
    return OVSegPredictor.from_pretrained(model, weights=weights, config=config, device=device), cfg


def run(args) -> int:
    import torch

    from ovseg.checkpoint import save_weights
    from ovseg.config import config_to_dict
    from ovseg.fileio import write_text_atomic
    from ovseg.modeling.prompt_head import build_prompt_head, head_input_channels
    from ovseg.sam.training import train_prompt_head

    cfg_train = PromptTrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(PromptTrainConfig)}
    )
    if cfg_train.iterations < 1 or cfg_train.batch_size < 1:
        raise ValueError("--iterations and --batch-size must be at least 1")
    out = Path(args.output)
    if args.train_sam:
        return run_train_sam(args, cfg_train, out)
    predictor, cfg = load_base_predictor(args.model, args.weights, args.config, args.device)
    head_cfg = cfg.prompt_head
    for name in (
        "embed_dim",
        "decoder_mlp_dim",
        "decoder_num_heads",
        "embedding_stride",
        "dense_box",
    ):
        if getattr(args, name) is not None:
            setattr(head_cfg, name, getattr(args, name))
    head_cfg.enabled = True
    if args.in_features:
        head_cfg.in_features = tuple(name.strip() for name in args.in_features.split(","))
    torch.manual_seed(cfg_train.seed)  # a new head, initialised by the seed (resuming loads it)
    predictor.model.prompt_head = build_prompt_head(
        head_input_channels(predictor.model), head_cfg
    ).to(predictor.device)
    dataset = training_dataset(args, out)
    teacher = None
    if args.teacher_sam:
        from ovseg.sam.masks import SamMasks
        from ovseg.sam.zoo import load_sam

        teacher = SamMasks(
            load_sam(args.teacher_sam, weights=args.teacher_weights, device=predictor.device)
        )
    result = train_prompt_head(
        predictor,
        dataset,
        out / "checkpoints",
        cfg_train,
        teacher=teacher,
        resume=not args.no_resume,
    )
    import yaml

    config = config_to_dict(cfg)
    config["name"] = f"{cfg.name}_prompt_head"
    config["clip"]["model_config_file"] = cfg.clip.model_config_file
    write_text_atomic(out / "config.yaml", yaml.safe_dump(_plain(config), sort_keys=False))
    save_weights(predictor.model.state_dict(), out / "model.safetensors")
    write_text_atomic(out / "losses.json", json.dumps(result["losses"]))
    print(f"prompt head trained ({result['iterations']} iterations) -> {out}", file=sys.stderr)
    return 0


def training_dataset(args, out: Path):
    """The synthetic world (``--synthetic-world``) or the dataset of the dataset arguments."""
    from ovseg.apps.arguments import dataset_from_arguments

    if args.synthetic_world:
        return synthetic_training_set(out / "data", args.synthetic_world)
    return dataset_from_arguments(args)


def run_train_sam(args, cfg_train: PromptTrainConfig, out: Path) -> int:
    """``--train-sam ARCH``: a whole SAM trained on the dataset with the head's recipe."""
    import torch

    from ovseg.checkpoint import save_weights
    from ovseg.fileio import write_text_atomic
    from ovseg.sam.training import train_sam
    from ovseg.sam.zoo import build_sam

    if args.teacher_sam:
        raise ValueError("--train-sam trains from the dataset's masks: drop --teacher-sam")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg_train.seed)
    sam = build_sam(args.train_sam, device=device)
    dataset = training_dataset(args, out)
    result = train_sam(sam, dataset, out / "checkpoints", cfg_train, resume=not args.no_resume)
    path = out / f"sam_{args.train_sam}.safetensors"
    save_weights(sam.state_dict(), path)
    write_text_atomic(out / "losses.json", json.dumps(result["losses"]))
    print(
        f"SAM {args.train_sam} trained ({result['iterations']} iterations) -> {path}",
        file=sys.stderr,
    )
    return 0


def _plain(value):
    """Tuples as lists, for YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
