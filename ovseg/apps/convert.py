"""Convert an official FC-CLIP checkpoint (detectron2 .pth) to ovseg's safetensors format.

    ovseg convert fcclip_cocopan.pth fcclip_cocopan.safetensors

Every key is mapped or the conversion fails with the list of missing / unexpected /
mis-shaped keys. The checkpoint is read with torch.load(weights_only=True).
"""

from __future__ import annotations

import argparse
import sys

from ovseg.checkpoint import (
    WeightsError,
    check_state_dict,
    read_state_dict,
    save_weights,
)
from ovseg.config import load_config
from ovseg.modeling.fcclip import build_model


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="official FC-CLIP checkpoint (.pth)")
    parser.add_argument("output", help="ovseg weights file to write (.safetensors)")
    parser.add_argument(
        "--config",
        default="fcclip_convnext_large_coco",
        help="config preset or YAML of the architecture (default: ConvNeXt-L)",
    )
    parser.add_argument(
        "--no-clip",
        action="store_true",
        help="leave out the frozen CLIP weights (open_clip loads them by tag)",
    )
    args = parser.parse_args(argv)
    try:
        state = read_state_dict(args.checkpoint)  # official layouts are converted here
        cfg = load_config(args.config)
        model = build_model(cfg, device="meta")  # shapes only, no memory
        check_state_dict(model, state, source=args.checkpoint)
        save_weights(
            state,
            args.output,
            include_clip=not args.no_clip,
            metadata={"config": cfg.name, "source": "official FC-CLIP checkpoint"},
        )
    except (WeightsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({len(state)} tensors, config {cfg.name})")
    return 0
