"""``ovseg bench-fields4d`` (and ``tools/bench_fields4d.py``): the 4D language fields measured
in the synthetic 4D world with the shipped synthetic_tiny model and the packaged sentence
encoder: time-agnostic mIoU and time-sensitive frame accuracy, temporal IoU and mIoU inside
the true span on held-out cameras and times, next to a static 3D field and ovseg on each
frame (2D); fit and render times (ovseg.synthetic.fields4d_report).

    ovseg bench-fields4d --out runs/fields4d-bench            # scene 0 (--scenes N: more)
    ovseg bench-fields4d --out runs/fields4d-quick --quick    # a small check, a few minutes
    ovseg bench-fields4d --out runs/f4 --scene 1 &            # scenes side by side ...
    ovseg bench-fields4d --out runs/f4 --scene 2 &
    ovseg bench-fields4d --out runs/f4 --scenes 3             # ... then all three gathered

Resumable: finished fits in OUT/fields4d and OUT/fields3d and scored scenes in OUT/scores
(made with the same settings) are reused.
"""

import argparse
import sys


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder (report.md, figure.png)")
    parser.add_argument("--scenes", type=int, default=1, help="scenes 0 .. N-1, gathered")
    parser.add_argument(
        "--scene",
        type=int,
        metavar="K",
        help="fit and score scene K alone (OUT/scores/scene_K.json), e.g. one "
        "process per scene; a later run with --scenes gathers the scores",
    )
    parser.add_argument("--iterations", type=int, default=1500, help="colour-fit iterations")
    parser.add_argument(
        "--language-iterations",
        type=int,
        default=1000,
        help="language-fit iterations of both fields (about 11 visits to each "
        "of the 90 training frames)",
    )
    parser.add_argument("--status-iterations", type=int, default=400)
    parser.add_argument("--steps", type=int, default=20, help="time steps of the world")
    parser.add_argument("--quick", action="store_true", help="small frames, short fits")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from ovseg.fields.field import FieldConfig
    from ovseg.fields.field4d import Field4DConfig
    from ovseg.fields.fit import DeformationFitConfig, LatentFitConfig, colour_config
    from ovseg.synthetic.fields4d_report import markdown, run, run_scene

    if args.threads:
        torch.set_num_threads(args.threads)
    counts = (args.scenes, args.iterations, args.language_iterations, args.status_iterations)
    if min(counts) < 1 or args.steps < 4 or (args.scene is not None and args.scene < 0):
        print(
            "error: --scenes and the iterations must be >= 1, --scene >= 0, --steps >= 4",
            file=sys.stderr,
        )
        return 2
    iterations, language, status = args.iterations, args.language_iterations, args.status_iterations
    world = {"steps": args.steps}
    if args.quick:
        iterations, language, status = 300, 200, 200
        world = {"steps": 6, "train_cameras": 3, "test_cameras": 1, "width": 80, "height": 64}
    colour = colour_config(iterations)  # as 'ovseg fields fit --iterations N'
    cfg = Field4DConfig(
        colour=colour,
        deformation=DeformationFitConfig(warm_up=min(150, iterations // 4)),
        language=LatentFitConfig(iterations=language),
        status=LatentFitConfig(iterations=status),
    )
    cfg3d = FieldConfig(colour=colour, language=LatentFitConfig(iterations=language))
    if args.scene is not None:
        record = run_scene(
            args.out, args.scene, cfg=cfg, cfg3d=cfg3d, world=world, progress=not args.no_progress
        )
        minutes = sum(record["fit4d_timings_s"].values()) / 60
        print(
            f"scene {args.scene}: scored (4D fit {minutes:.1f} min); gather the scenes with "
            f"--scenes N"
        )
        return 0
    report = run(
        args.out,
        scenes=args.scenes,
        cfg=cfg,
        cfg3d=cfg3d,
        world=world,
        progress=not args.no_progress,
    )
    print(markdown(report))
    return 0
