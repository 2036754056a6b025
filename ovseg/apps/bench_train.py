"""Training throughput and peak memory: a few iterations of the real training loop on
generated COCO-panoptic data (random weights).

    ovseg bench-train --config fcclip_tiny_test --crop-size 256 --batch-size 2 --iters 20
    ovseg bench-train --config fcclip_convnext_large_coco --crop-size 1024 \
        --batch-size 1 --iters 3
"""

import argparse
import json
import resource
import statistics
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="fcclip_tiny_test")
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)

    import torch

    from ovseg.config import load_config
    from ovseg.data import LargeScaleJitter, PanopticDataset
    from ovseg.synthetic.scenes import write_synthetic_panoptic
    from ovseg.train.loop import TrainConfig, train

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ovseg-bench-train-"))
    json_path = Path(
        write_synthetic_panoptic(
            work / "data",
            max(8, args.batch_size * 2),
            size=(args.crop_size, args.crop_size),
            seed=0,
        )
    )
    dataset = PanopticDataset(json_path.parent / "images", json_path, json_path.parent / "panoptic")
    cfg = TrainConfig(
        max_iters=args.iters,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        amp=args.amp,
        log_every=1,
        checkpoint_every=10**9,
        num_workers=0,
        load_clip_weights=False,
    )
    train(
        load_config(args.config),
        cfg,
        dataset,
        work / "run",
        transform=LargeScaleJitter(crop_size=args.crop_size),
        progress=False,
    )
    records = [json.loads(line) for line in (work / "run" / "log.jsonl").open()]
    speeds = [r["images_per_s"] for r in records[1:]] or [records[0]["images_per_s"]]
    result = {
        "config": args.config,
        "crop_size": args.crop_size,
        "batch_size": args.batch_size,
        "amp": args.amp,
        "threads": args.threads,
        "iterations": args.iters,
        "images_per_s_median": statistics.median(speeds),
        "seconds_per_iteration": args.batch_size / statistics.median(speeds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0
