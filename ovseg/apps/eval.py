"""``ovseg eval`` (and ``tools/eval.py``): PQ / mIoU / AP of a model on a dataset.

Under torchrun (``torchrun --nproc_per_node N tools/eval.py ...``; several machines with
``--nnodes`` and a rendezvous endpoint) each process evaluates every N-th image on its own
device (GPU = local rank, NCCL; CPU: gloo) and rank 0 prints the one combined report.
"""

from __future__ import annotations

import argparse
import contextlib
import sys


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    from ovseg.apps.arguments import (
        add_dataset_arguments,
        add_keep_novel_argument,
        add_model_arguments,
        add_threads_argument,
        dataset_from_arguments,
    )
    from ovseg.apps.outputs import check_writable, writable_folder

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate zero-shot / in-vocabulary segmentation on a COCO-panoptic format "
        "dataset (PQ, mIoU, AP) or a semantic-PNG dataset (mIoU), with the dataset's own "
        "vocabulary.",
    )
    add_model_arguments(parser, default="fcclip_convnext_large_coco", precision="fp32")
    add_dataset_arguments(parser, semantic=True)
    parser.add_argument("--tasks", default="panoptic,semantic,instance")
    add_keep_novel_argument(parser)
    parser.add_argument("--output", help="directory for results.json and saved predictions")
    parser.add_argument(
        "--save-predictions",
        action="store_true",
        help="also write COCO panoptic format predictions",
    )
    parser.add_argument(
        "--head",
        choices=("fcclip", "pixel-text"),
        default="fcclip",
        help="pixel-text: score the training-free pixel-text semantic output (semantic only)",
    )
    parser.add_argument("--limit", type=int, help="evaluate the first N images only")
    parser.add_argument("--num-workers", type=int, default=2)
    add_threads_argument(parser)
    args = parser.parse_args(argv)

    from ovseg.checkpoint import WeightsError
    from ovseg.data import DatasetError
    from ovseg.distributed import DistInfo, cleanup, init_distributed
    from ovseg.threads import set_threads

    info = DistInfo()
    printed = []  # the report, once its table is printed
    try:
        with contextlib.ExitStack() as stack:
            set_threads(args.threads)
            dataset = dataset_from_arguments(args)
            info = init_distributed(args.device)
            if args.output is not None:  # before any work, not after hours of evaluation
                if info.is_main:  # which alone removes a folder it made and left empty
                    stack.enter_context(writable_folder(args.output))
                else:
                    check_writable(args.output)
            _evaluate(args, dataset, info, printed)
    except (ValueError, FileNotFoundError, WeightsError, DatasetError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if not printed:
            raise
        print(  # the scores are printed above; only the files are missing
            f"error: cannot write the results into {args.output} ({error}); the scores are "
            "printed above",
            file=sys.stderr,
        )
        return 1
    finally:
        cleanup(info)
    return 0


def _evaluate(args, dataset, info, printed: list) -> dict:
    """Load the model and score it; the table is printed (and the report added to
    ``printed``) as soon as the scores are known, before the files are written."""
    from ovseg.evaluation.runner import evaluate, format_report
    from ovseg.predictor import OVSegPredictor

    def show(report: dict) -> None:
        print(format_report(report), flush=True)
        printed.append(report)

    device = info.device if info.enabled else args.device
    tasks = tuple(args.tasks.split(","))
    if args.keep_novel and (args.head != "fcclip" or "panoptic" not in tasks):
        used = f"--head {args.head}" if args.head != "fcclip" else f"--tasks {args.tasks}"
        raise ValueError(f"--keep-novel changes panoptic output only, not {used}: drop one")
    predictor = OVSegPredictor.from_pretrained(
        args.model,
        weights=args.weights,
        config=args.config,
        device=device,
        precision=args.precision,
        keep_novel=args.keep_novel,
    )
    return evaluate(
        predictor,
        dataset,
        tasks=tasks,
        output_dir=args.output,
        save_predictions=args.save_predictions,
        limit=args.limit,
        num_workers=args.num_workers,
        head=args.head,
        dist_info=info,
        on_report=show,
    )
