"""``ovseg agreement`` (and ``tools/task_agreement.py``): how far panoptic and semantic
segmentation of the same images agree, class by class.

Semantic inference scores every class at every pixel from all queries' non-void class
probabilities, while panoptic inference keeps only the queries whose most likely class is not
"no object" (void). A class that every query covering it finds less likely than void (a class
the mask head was trained to call no-object, e.g. a novel class that was void in training) is
found by semantic and missed by panoptic. This command measures it:

    ovseg agreement IMAGES_DIR --model synthetic_tiny --vocab synthetic_world
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from ovseg.apps.arguments import add_keep_novel_argument, add_model_arguments

    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", help="a folder of images (or one image)")
    parser.add_argument("--vocab", required=True, help="vocabulary name or file")
    parser.add_argument("--short-side", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="the first N images only")
    parser.add_argument("--json", help="write the table here too")
    add_model_arguments(parser, precision="fp32")
    add_keep_novel_argument(parser)
    return parser


def agreement(predictor, images: list[Path], vocabulary, short_side=None) -> dict:
    """Per class: pixels semantic gives it, the share of those panoptic gives the same class
    (agree), another class (other) or no segment (none), and the share of panoptic's pixels
    of the class that semantic agrees with. Plus the same over all pixels."""
    import numpy as np

    from ovseg.preprocess import load_image

    predictor.set_vocabulary(vocabulary)
    names = predictor.vocabulary.names
    k = len(names)
    # counts[s, p]: pixels semantic calls s and panoptic calls p (index k: no segment)
    counts = np.zeros((k, k + 1), dtype=np.int64)
    for path in images:
        result = predictor.predict(
            load_image(path), tasks=("panoptic", "semantic"), short_side=short_side
        )
        semantic = result["sem_seg"].argmax(0).cpu().numpy()
        ids = result["panoptic_seg"].cpu().numpy()
        lookup = np.full(int(ids.max()) + 1, k, dtype=np.int64)
        for segment in result["segments_info"]:
            lookup[segment["id"]] = segment["category_id"]
        counts += np.bincount(
            semantic.ravel() * (k + 1) + lookup[ids].ravel(), minlength=k * (k + 1)
        ).reshape(k, k + 1)
    rows = {}
    for c, name in enumerate(names):
        total = int(counts[c].sum())
        panoptic_total = int(counts[:, c].sum())
        if total == 0 and panoptic_total == 0:
            continue
        rows[name] = {
            "semantic_pixels": total,
            "agree": float(counts[c, c] / max(total, 1)),
            "other": float((total - counts[c, c] - counts[c, k]) / max(total, 1)),
            "none": float(counts[c, k] / max(total, 1)),
            "panoptic_agreeing": float(counts[c, c] / max(panoptic_total, 1)),
        }
    pixels = int(counts.sum())
    return {
        "images": len(images),
        "pixels": pixels,
        "agree": float(np.trace(counts[:, :k]) / max(pixels, 1)),
        "none": float(counts[:, k].sum() / max(pixels, 1)),
        "per_class": rows,
    }


def format_table(report: dict) -> str:
    lines = [
        f"{report['images']} images: panoptic agrees with semantic on {report['agree']:.1%} of "
        f"pixels; {report['none']:.1%} are in no panoptic segment",
        f"{'class':<18}{'sem px':>9}{'agree':>8}{'other':>8}{'none':>8}",
    ]
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<18}{row['semantic_pixels']:>9}{row['agree']:>8.1%}{row['other']:>8.1%}"
            f"{row['none']:>8.1%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    from ovseg.apps.arguments import load_predictor_from_arguments
    from ovseg.apps.outputs import UsageError
    from ovseg.apps.predict_inputs import collect_images
    from ovseg.fileio import write_text_atomic
    from ovseg.preprocess import ImageError
    from ovseg.vocabulary import as_vocabulary

    try:
        vocabulary = as_vocabulary(args.vocab)
        images = collect_images([args.images])[: args.limit]
        predictor = load_predictor_from_arguments(args)
        report = agreement(predictor, images, vocabulary, args.short_side)
    except (UsageError, ImageError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1))
    return 0
