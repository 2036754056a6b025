"""``ovseg text-ablation`` (and ``tools/text_ablation.py``): the context-aware text ablation in
the synthetic world (ovseg.synthetic.text_ablation). Rows: baseline, pixel_text,
visual_context, cdt, context, all; resumable. A (row, seed) at 1200 iterations took 35-45 min
on one core of a 2-core Xeon (two ablations side by side, --threads 1 each).

    ovseg text-ablation --out runs/ablation --iterations 1200           # every row, seed 0
    ovseg text-ablation --out runs/ablation --iterations 1200 --rows cdt,all --seeds 1
    ovseg text-ablation --out runs/ablation-quick --quick         # CI-sized check
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    from ovseg.synthetic.text_ablation import ROWS

    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output directory (ablation.md, runs)")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated rows (default: all of them)"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument(
        "--iterations", type=int, help="segmentation iterations (default: the world's 3600)"
    )
    parser.add_argument("--quick", action="store_true", help="the world's CI-sized settings")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        rows = [r.strip() for r in args.rows.split(",") if r.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not rows or not seeds:
            raise ValueError("give at least one row and one seed")
        if args.iterations is not None and args.iterations < 1:
            raise ValueError("--iterations must be at least 1")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        from ovseg.apps.outputs import check_writable
        from ovseg.synthetic.text_ablation import run

        check_writable(args.out, option="--out")  # before any work
        text = run(
            args.out,
            rows,
            seeds,
            iterations=args.iterations,
            quick=args.quick,
            progress=not args.no_progress,
        )
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(text)
    return 0
