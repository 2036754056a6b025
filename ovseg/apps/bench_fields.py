"""``ovseg bench-fields`` (and ``tools/bench_fields.py``): the 3D language fields measured in
the synthetic 3D world with the shipped synthetic_tiny model: localisation, mIoU and
multi-view consistency on held-out views, next to ovseg run on the same views in 2D; fit and
render times and peak memory (ovseg.synthetic.fields_report).

    ovseg bench-fields --out runs/fields-bench                 # 3 scenes, about 15 min a scene
    ovseg bench-fields --out runs/fields-quick --quick         # a small check, about 2 min

Resumable: finished fits in OUT/fields are reused.
"""

import argparse
import sys


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder (report.md, figure.png)")
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=600, help="colour-fit iterations")
    parser.add_argument("--language-iterations", type=int, default=300)
    parser.add_argument("--query", default="water", help="the figure's phrase")
    parser.add_argument("--quick", action="store_true", help="1 scene, small views, short fits")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from ovseg.fields.field import FieldConfig
    from ovseg.fields.fit import LatentFitConfig, colour_config
    from ovseg.synthetic.fields_report import run

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scenes < 1 or args.iterations < 1 or args.language_iterations < 1:
        print(
            "error: --scenes, --iterations and --language-iterations must be >= 1", file=sys.stderr
        )
        return 2
    iterations, language, scenes, views = (
        args.iterations,
        args.language_iterations,
        args.scenes,
        (24, 6),
    )
    if args.quick:
        iterations, language, scenes, views = 60, 40, 1, (8, 2)
    # the colour fit of 'ovseg fields fit --iterations N'
    cfg = FieldConfig(
        colour=colour_config(iterations), language=LatentFitConfig(iterations=language)
    )
    report = run(
        args.out,
        scenes=scenes,
        cfg=cfg,
        train_views=views[0],
        test_views=views[1],
        query=args.query,
        progress=not args.no_progress,
    )
    from ovseg.synthetic.fields_report import markdown

    print(markdown(report))
    return 0
