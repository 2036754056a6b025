#!/usr/bin/env python
"""Evaluate a model: PQ / mIoU / AP. See ``python tools/eval.py --help``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate zero-shot / in-vocabulary segmentation on a COCO-panoptic format "
        "dataset (PQ, mIoU, AP) or a semantic-PNG dataset (mIoU), with the dataset's own "
        "vocabulary."
    )
    parser.add_argument("--model", default="fcclip_convnext_large_coco")
    parser.add_argument("--weights", help="weights file (ovseg or official)")
    parser.add_argument("--config", help="config preset or YAML to go with --weights")
    parser.add_argument("--dataset", help="builtin panoptic dataset, e.g. coco_2017_val_panoptic")
    parser.add_argument("--data-root", help="root of the builtin datasets (default: $OVSEG_DATA)")
    parser.add_argument("--images", help="image directory")
    parser.add_argument("--panoptic-json", help="COCO panoptic JSON")
    parser.add_argument("--panoptic-dir", help="directory of panoptic PNGs")
    parser.add_argument("--semantic-labels", help="label PNG directory (semantic dataset)")
    parser.add_argument("--vocab", help="vocabulary (required for semantic datasets)")
    parser.add_argument("--tasks", default="panoptic,semantic,instance")
    parser.add_argument("--output", help="directory for results.json and saved predictions")
    parser.add_argument(
        "--save-predictions",
        action="store_true",
        help="also write COCO panoptic format predictions",
    )
    parser.add_argument("--limit", type=int, help="evaluate the first N images only")
    parser.add_argument("--device", default=None)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)

    from ovseg.checkpoint import WeightsError
    from ovseg.data import DatasetError, PanopticDataset, SemanticDataset, builtin_panoptic
    from ovseg.evaluation.runner import evaluate, format_report
    from ovseg.predictor import OVSegPredictor
    from ovseg.vocabulary import load_vocabulary

    try:
        vocab = load_vocabulary(args.vocab) if args.vocab else None
        if args.semantic_labels:
            if vocab is None:
                raise ValueError("a semantic dataset needs --vocab")
            dataset = SemanticDataset(args.images, args.semantic_labels, vocab)
        elif args.dataset:
            dataset = builtin_panoptic(args.dataset, args.data_root, vocabulary=vocab)
        elif args.images and args.panoptic_json and args.panoptic_dir:
            dataset = PanopticDataset(
                args.images, args.panoptic_json, args.panoptic_dir, vocabulary=vocab
            )
        else:
            raise ValueError(
                "give --dataset, or --images with --panoptic-json and "
                "--panoptic-dir, or --images with --semantic-labels and --vocab"
            )
        predictor = OVSegPredictor.from_pretrained(
            args.model, weights=args.weights, config=args.config, device=args.device
        )
        report = evaluate(
            predictor,
            dataset,
            tasks=tuple(args.tasks.split(",")),
            output_dir=args.output,
            save_predictions=args.save_predictions,
            limit=args.limit,
            num_workers=args.num_workers,
        )
    except (ValueError, FileNotFoundError, WeightsError, DatasetError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
