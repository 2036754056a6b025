#!/usr/bin/env python
"""The synthetic open-vocabulary world, end to end: generate scenes with captions, train a
small CLIP on the captions, train ovseg on base classes only, evaluate base and novel classes.

    python tools/synthetic_world.py --out runs/world            # full run (about 30 min)
    python tools/synthetic_world.py --out runs/world --quick    # CI-sized (a few minutes)
"""

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--ship",
        action="store_true",
        help="copy the weights, vocabularies and a few val scenes into the "
        "repository as the model-zoo entry synthetic_tiny",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from ovseg.synthetic_world import WorldConfig, run

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = WorldConfig.quick() if args.quick else WorldConfig()
    cfg.novel_things, cfg.novel_stuff, cfg.seed = args.novel_things, args.novel_stuff, args.seed
    try:
        report = run(args.out, cfg, progress=not args.no_progress)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print((Path(args.out) / "report.md").read_text())
    if args.ship:
        out = Path(args.out)
        shutil.copyfile(
            out / "synthetic_tiny.safetensors", ROOT / "models" / "synthetic_tiny.safetensors"
        )
        shutil.copyfile(
            out / "data" / "vocab.txt", ROOT / "ovseg" / "vocab" / "synthetic_world.txt"
        )
        shutil.copyfile(
            out / "base_vocab.txt", ROOT / "ovseg" / "vocab" / "synthetic_world_base.txt"
        )
        examples = ROOT / "demo" / "examples"
        for image in sorted((out / "data" / "val" / "images").glob("*.png"))[:3]:
            shutil.copyfile(image, examples / f"synthetic_{image.name}")
        print(f"shipped: models/synthetic_tiny.safetensors ({report['weights_mib']:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
