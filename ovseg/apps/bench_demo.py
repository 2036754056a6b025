"""Web-demo latencies without a browser: upload-to-result, a class change on the same image,
and video frames per second, for a model config (random weights unless --weights).

    ovseg bench-demo --config synthetic_tiny \
        --weights ovseg/assets/synthetic_tiny/synthetic_tiny.safetensors
    ovseg bench-demo --config fcclip_convnext_large_coco     # random weights
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from ovseg.assets import EXAMPLES_DIR


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="fcclip_tiny_parity")
    parser.add_argument("--weights")
    parser.add_argument("--image", default=str(EXAMPLES_DIR / "coffee.jpg"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=10, help="frames of the test video")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from ovseg.apps.web import Demo
    from ovseg.checkpoint import load_weights
    from ovseg.config import load_config
    from ovseg.modeling.fcclip import build_model
    from ovseg.predictor import OVSegPredictor
    from ovseg.preprocess import load_image, resize_image
    from ovseg.video import write_mp4

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    model = build_model(cfg)
    if args.weights:
        load_weights(model, args.weights)
    cache = tempfile.mkdtemp(prefix="ovseg-bench-demo-")
    demo = Demo(OVSegPredictor(model, cfg, text_cache_dir=cache), model_note=args.config)
    image = load_image(args.image)
    timings = {}
    start = time.perf_counter()
    demo.segment_image(image, "cup, saucer, spoon, table", "(type classes)", "panoptic")
    timings["first_result_s"] = time.perf_counter() - start
    start = time.perf_counter()
    demo.segment_image(image, "coffee, plate, wood", "(type classes)", "panoptic")
    timings["class_change_s"] = time.perf_counter() - start
    frames = [resize_image(image, (240, 320))] * 1
    shifted = [np.roll(frames[0], 4 * t, axis=1) for t in range(args.frames)]
    video = Path(cache) / "clip.mp4"
    write_mp4(video, shifted, fps=10)
    start = time.perf_counter()
    demo.segment_video(str(video), "cup, saucer, spoon, table", "(type classes)")
    timings["video_frames_per_s"] = args.frames / (time.perf_counter() - start)
    result = {
        "config": args.config,
        "weights": args.weights or "random",
        "threads": args.threads,
        "image": args.image,
        **timings,
    }
    print(json.dumps(result, indent=1))
    demo.close()
    return 0
