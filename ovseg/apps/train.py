"""``ovseg train`` (and ``tools/train.py``): training, single process or under torchrun."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ovseg.apps.arguments import (
    add_dataset_arguments,
    add_threads_argument,
    boolean,
    dataset_from_arguments,
)
from ovseg.train.loop import TrainConfig


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train FC-CLIP's mask generator and in-vocabulary head on a COCO-panoptic "
        "format dataset with the CLIP frozen. Multi-GPU / multi-process: "
        "torchrun --nproc_per_node N -m ovseg train ... (or tools/train.py in a clone)",
    )
    parser.add_argument(
        "--config", default="fcclip_convnext_large_coco", help="model config preset or YAML"
    )
    add_dataset_arguments(parser)
    parser.add_argument("--output", required=True, help="run directory (checkpoints, logs)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from the latest checkpoint in --output (or from PATH)",
    )
    parser.add_argument("--init-weights", help="start from these weights (ovseg or official)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    add_threads_argument(parser)
    parser.add_argument("--tensorboard", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        value = getattr(defaults, field.name)
        if isinstance(value, bool):
            parser.add_argument(
                flag,
                type=boolean,
                default=value,
                metavar="BOOL",
                help=f"(default: {value})",
            )
        elif field.name == "amp":
            parser.add_argument(flag, choices=("none", "bf16", "fp16"), default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"(default: {value})")
    return parser


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    from ovseg.apps.outputs import writable_folder
    from ovseg.checkpoint import WeightsError
    from ovseg.config import load_config
    from ovseg.data import LargeScaleJitter
    from ovseg.train.loop import train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    from ovseg.threads import set_threads

    try:
        set_threads(args.threads)
        dataset = dataset_from_arguments(args)
        transform = LargeScaleJitter(
            crop_size=cfg.crop_size, min_scale=cfg.min_scale, max_scale=cfg.max_scale
        )
        model_cfg = load_config(args.config)
        with writable_folder(args.output):  # before any work
            record = train(
                model_cfg,
                cfg,
                dataset,
                args.output,
                transform=transform,
                resume=args.resume,
                init_weights=args.init_weights,
                device=args.device,
                tensorboard=args.tensorboard,
                progress=not args.no_progress,
            )
    except (ValueError, FileNotFoundError, WeightsError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if record:
        print(
            f"done: iteration {record['iter']}, loss {record['loss']:.4f}, "
            f"{record['images_per_s']:.2f} images/s"
        )
    return 0
