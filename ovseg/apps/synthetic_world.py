"""The synthetic open-vocabulary world, end to end: generate scenes with captions, train a
small CLIP on the captions, train ovseg on base classes only, evaluate base and novel classes.

    ovseg synthetic-world --out runs/world            # full run (about 37 min)
    ovseg synthetic-world --out runs/world --quick    # CI-sized (about 4 min)
    ovseg synthetic-world --out runs/world --ship-only  # ship a finished run
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # ovseg/: a checkout's, with pip install -e


def ship(out: Path) -> None:
    """Copy a finished run into the package (ovseg/assets, ovseg/vocab) as the model-zoo entry
    synthetic_tiny.
    Raises ValueError, before copying anything, when the run in ``out`` is not complete."""
    from ovseg.fileio import atomic_write

    try:
        report = json.loads((out / "report.json").read_text())
        weights_mib = float(report["weights_mib"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{out} holds no finished run: report.json missing or unreadable ({error})"
        ) from None
    model_dir = PACKAGE / "assets" / "synthetic_tiny"
    copies = [
        (out / "synthetic_tiny.safetensors", model_dir / "synthetic_tiny.safetensors"),
        (out / "data" / "vocab.txt", PACKAGE / "vocab" / "synthetic_world.txt"),
        (out / "base_vocab.txt", PACKAGE / "vocab" / "synthetic_world_base.txt"),
        (out / "report.md", model_dir / "report.md"),
        (out / "predictions.png", model_dir / "predictions.png"),
    ]
    for image in sorted((out / "data" / "val" / "images").glob("*.png"))[:3]:
        copies.append((image, PACKAGE / "assets" / "examples" / f"synthetic_{image.name}"))
    missing = [str(source) for source, _ in copies if not source.is_file()]
    if missing:
        raise ValueError(f"{out} is not a complete run, missing: {', '.join(missing)}")
    for source, target in copies:  # each file whole or not at all (a copy, then a rename)
        atomic_write(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
    print(f"shipped {copies[0][1]} ({weights_mib:.1f} MiB)")


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output directory (report.md, report.json, predictions.png, weights)",
    )
    parser.add_argument("--quick", action="store_true", help="small, fast run for CI")
    parser.add_argument("--novel-things", type=int, default=4)
    parser.add_argument("--novel-stuff", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="which classes are novel (held out of segmentation training): 0 is the shipped "
        "split (star, arrow, heart, diamond, grass); another seed draws another split",
    )
    parser.add_argument(
        "--clip-from",
        metavar="WEIGHTS",
        help="take the trained CLIP from a finished run's weights (e.g. "
        "ovseg/assets/synthetic_tiny/synthetic_tiny.safetensors) instead of training it: it "
        "sees every class in words, so it does not depend on the split; only the "
        "segmentation is trained",
    )
    parser.add_argument(
        "--evaluate",
        metavar="WEIGHTS",
        help="train nothing: evaluate this finished model (e.g. the shipped synthetic_tiny) "
        "on the world's val scenes with the split of --split-seed, and write the report",
    )
    parser.add_argument(
        "--void-aware-no-object",
        action="store_true",
        help="no no-object loss for unmatched queries whose masks lie mostly on void "
        "(unlabelled, e.g. novel) pixels: they may have found an object nobody named",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--ship",
        action="store_true",
        help="after the run, copy the weights, "
        "vocabularies, report and a few val scenes into the repository as the "
        "model-zoo entry synthetic_tiny",
    )
    parser.add_argument(
        "--ship-only",
        action="store_true",
        help="ship the finished run in --out without running again",
    )
    parser.add_argument(
        "--plain-things",
        action="store_true",
        help="things without their surface patterns: silhouette and colour only (harder)",
    )
    parser.add_argument(
        "--void-in-mask-loss",
        action="store_true",
        help="the official recipe: unlabelled (void, novel) pixels are the background of every "
        "matched mask; by default they are left out of the mask losses",
    )
    parser.add_argument(
        "--data-only",
        type=int,
        metavar="N",
        help="only write N train and N/4 val scenes in COCO-panoptic format under --out "
        "(data to train on, offline), then stop",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    trains = [
        f
        for f, on in (
            ("--ship", args.ship),
            ("--clip-from", args.clip_from),
            ("--void-aware-no-object", args.void_aware_no_object),
        )
        if on
    ]
    if args.evaluate and trains:
        print(f"error: --evaluate trains nothing: drop {', '.join(trains)}", file=sys.stderr)
        return 2
    if args.ship_only:
        return _ship_or_say_why(out)
    try:  # before any work
        _check_writable(out, ship=args.ship)
        if args.clip_from or args.evaluate:  # missing, corrupt or CLIP-less: said now
            from ovseg.synthetic.world import read_world_clip

            read_world_clip(args.clip_from or args.evaluate)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.data_only is not None:
        return _write_data(out, args.data_only, args.seed, patterns=not args.plain_things)

    import torch

    from ovseg.synthetic.config import WorldConfig
    from ovseg.synthetic.world import run

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = WorldConfig.quick() if args.quick else WorldConfig()
    cfg.novel_things, cfg.novel_stuff, cfg.seed = args.novel_things, args.novel_stuff, args.seed
    cfg.patterns = not args.plain_things
    cfg.ignore_void = not args.void_in_mask_loss
    cfg.split_seed, cfg.clip_from = args.split_seed, args.clip_from
    cfg.evaluate_weights = args.evaluate
    cfg.void_aware_no_object = args.void_aware_no_object
    try:
        run(out, cfg, progress=not args.no_progress)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text())
    return _ship_or_say_why(out) if args.ship else 0


def _check_writable(out: Path, *, ship: bool) -> None:
    """UsageError (a ValueError) when --out, or with --ship the package's folders, cannot take
    files."""
    from ovseg.apps.outputs import UsageError, check_writable

    check_writable(out, option="--out")
    if ship:
        for folder in (PACKAGE / "assets" / "synthetic_tiny", PACKAGE / "vocab"):
            try:
                check_writable(folder)
            except UsageError as error:
                raise UsageError(
                    f"--ship writes into the package, and {folder} cannot take files "
                    f"({error.__cause__.strerror}): ship from a checkout installed with "
                    "pip install -e, or drop --ship"
                ) from None


def _write_data(out: Path, count: int, seed: int, *, patterns: bool) -> int:
    """COCO-panoptic scenes of the synthetic world: out/train and out/val."""
    from ovseg.synthetic.scenes import write_synthetic_panoptic

    if count < 1:
        print("error: --data-only needs at least 1 scene", file=sys.stderr)
        return 2
    for split, number in (("train", count), ("val", max(1, count // 4))):
        path = write_synthetic_panoptic(out, number, split=split, seed=seed, patterns=patterns)
        print(
            f"{split}: --images {path.parent / 'images'} --panoptic-json {path} "
            f"--panoptic-dir {path.parent / 'panoptic'}"
        )
    return 0


def _ship_or_say_why(out: Path) -> int:
    try:
        ship(out)
    except ValueError as error:
        print(f"error: {error}; run ovseg synthetic-world --out DIR first", file=sys.stderr)
        return 2
    return 0
