"""``ovseg bench-lift`` (and ``tools/bench_lift.py``): training-free lifting of ovseg's
features onto Gaussian splats, measured (ovseg.synthetic.lift_report).

    ovseg bench-lift --out runs/lift --accuracy --fields runs/fields-bench/fields
        # the 3D world's 3 scenes: lifted onto the fitted Gaussians and onto the ground-truth
        # splat, against the trained field (reused from bench-fields, else fitted: ~10 min
        # a scene) and ovseg in 2D
    ovseg bench-lift --out runs/lift --scale --sizes 50000x150x640x480,1000000x150x1280x960
        # speed and memory at real-capture scale (world written once, then reused)
    ovseg bench-lift --out runs/lift-quick --quick     # a small check of both, about 1 min
    ovseg bench-lift --out runs/lift --accuracy --refine 3
        # the same with rows for lifts refined by 3 least-squares passes; finished fits and
        # lifts in OUT are reused, so this costs the new lifts and the scoring

Writes OUT/accuracy.json, OUT/scale.json, OUT/report.md and OUT/figure.png.
"""

import argparse
import sys

SIZES = "50000x150x640x480,300000x150x640x480,1000000x150x1280x960"


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--accuracy", action="store_true", help="the 3D world's held-out scores")
    parser.add_argument("--scale", action="store_true", help="speed and memory at scale")
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument(
        "--fit-scenes",
        type=int,
        help="fit the trained field on the first N scenes only (default: all; ~10-40 min a scene)",
    )
    parser.add_argument("--fields", help="bench-fields' OUT/fields folder to reuse its fits")
    parser.add_argument(
        "--gaussians",
        type=int,
        default=100_000,
        help="Gaussians in the accuracy scenes' ground-truth splats",
    )
    parser.add_argument(
        "--sizes", help=f"GAUSSIANSxVIEWSxWIDTHxHEIGHT, ... (default: {SIZES})", default=SIZES
    )
    parser.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="N",
        help="also lift with N least-squares passes (accuracy: rows of their own; scale: timed)",
    )
    parser.add_argument(
        "--keep-novel",
        action="store_true",
        help="accuracy: also lift from 2D segments made with the keep-novel panoptic rule "
        "(fields lift --keep-novel; rows of their own)",
    )
    parser.add_argument("--quick", action="store_true", help="1 small scene of each kind")
    parser.add_argument("--threads", type=int, help="torch and numba threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    import json
    from pathlib import Path

    import numba
    import torch

    from ovseg.fileio import write_text_atomic
    from ovseg.synthetic import lift_report

    try:
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
        if not sizes or any(len(s) != 4 or min(s) < 1 for s in sizes):
            raise ValueError
    except ValueError:
        print("error: --sizes takes GAUSSIANSxVIEWSxWIDTHxHEIGHT, comma-separated", file=sys.stderr)
        return 2
    if args.scenes < 1 or (args.threads is not None and args.threads < 1) or args.refine < 0:
        print("error: --scenes and --threads must be >= 1, --refine >= 0", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    out = Path(args.out)
    accuracy = scale = None
    if args.quick:
        from ovseg.fields.field import FieldConfig
        from ovseg.fields.fit import FitConfig, LatentFitConfig

        cfg = FieldConfig(
            colour=FitConfig(iterations=30, densify_from=10, densify_until=20),
            language=LatentFitConfig(iterations=20),
            autoencoder_iterations=100,
        )
        accuracy = lift_report.run_accuracy(
            out, scenes=1, gaussians=20_000, cfg=cfg, progress=not args.no_progress
        )
        scale = lift_report.run_scale(out, [(20_000, 8, 160, 120)], progress=False)
    else:
        if args.accuracy:
            accuracy = lift_report.run_accuracy(
                out,
                scenes=args.scenes,
                fit_scenes=args.fit_scenes,
                fields=Path(args.fields) if args.fields else None,
                gaussians=args.gaussians,
                refine=args.refine,
                keep_novel=args.keep_novel,
                progress=not args.no_progress,
            )
        if args.scale:
            scale = lift_report.run_scale(
                out, sizes, refine=args.refine, progress=not args.no_progress
            )
    if accuracy is None and (out / "accuracy.json").is_file():
        accuracy = json.loads((out / "accuracy.json").read_text())
    if scale is None and (out / "scale.json").is_file():
        scale = json.loads((out / "scale.json").read_text())
    if accuracy is None and scale is None:
        print("error: give --accuracy, --scale or --quick", file=sys.stderr)
        return 2
    if accuracy is not None and (out / "lifted_gt" / "scene_000").is_dir():
        lift_report.figure(out, "water")
    text = lift_report.markdown(accuracy, scale)
    write_text_atomic(out / "report.md", text)
    print(text)
    return 0
