"""Export a model to ONNX with its vocabulary left open (ovseg.export).

    ovseg export --model synthetic_tiny --out exports/synthetic_tiny
    ovseg export --weights fcclip_cocopan.safetensors --config fcclip_convnext_large_coco \\
        --out exports/fcclip_l --no-text-encoder

Writes image_encoder.onnx (image -> masks and embeddings), classifier.onnx (the text
embeddings of any classes are inputs), text_encoder.onnx (class names -> embeddings without
PyTorch) and export.json; ONNX Runtime checks every graph against PyTorch on another image
size before the folder is written. Run it with ovseg.export.OnnxPredictor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    from ovseg.apps.arguments import add_model_arguments, load_predictor_from_arguments

    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser, precision="fp32")
    parser.add_argument("--out", required=True, help="export folder to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 or newer (18)")
    parser.add_argument(
        "--no-text-encoder",
        action="store_true",
        help="leave out text_encoder.onnx (the application brings its own text embeddings)",
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip the ONNX Runtime check against PyTorch"
    )
    args = parser.parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        print(
            f"error: export needs {error.name}: pip install 'ovseg[export]' "
            "(onnx, onnxscript, onnxruntime)",
            file=sys.stderr,
        )
        return 2
    from ovseg.apps.outputs import UsageError, check_writable
    from ovseg.export import ExportError, export_onnx

    if args.precision != "fp32":
        print("error: export runs on the fp32 model: drop --precision", file=sys.stderr)
        return 2
    try:
        # The export is built beside --out and moved in place: that folder must take files.
        check_writable(Path(args.out).absolute().parent, option="--out")
        predictor = load_predictor_from_arguments(args)
        settings = export_onnx(
            predictor,
            args.out,
            opset=args.opset,
            text_encoder=not args.no_text_encoder,
            check=not args.no_check,
        )
    except (ExportError, FileNotFoundError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {', '.join(g + '.onnx' for g in settings['graphs'])}, export.json")
    if "check" in settings:
        print("ONNX Runtime vs PyTorch, largest difference: " + json.dumps(settings["check"]))
    return 0
