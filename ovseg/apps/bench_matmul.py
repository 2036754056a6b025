"""``ovseg bench-matmul`` (and ``tools/bench_matmul.py``): the machine's peak matrix-product
rate per precision, the ceiling the backbone's achieved GFLOP/s is held against.

Times square products (torch.matmul; int8: a dynamically quantized linear layer, as the int8
path runs) at a few sizes and keeps the best rate, in GFLOP/s (2 n^3 operations a product).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SIZES = (1024, 2048, 3072)


def peak_matmul_gflops(
    precision: str = "fp32", *, sizes=SIZES, repeats: int = 3, device: str = "cpu"
) -> dict:
    """Best GFLOP/s of an n x n x n product over ``sizes`` (best of ``repeats`` each).

    precision: fp32, bf16, fp16 (tensors of that type) or int8 (CPU only: a dynamically
    quantized nn.Linear, weights and activations int8, as ``--precision int8`` runs).
    Returns {"precision", "gflops", "size"} for the best size.
    """
    from ovseg.precision import AUTOCAST_DTYPES, quantize_linears

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = {"precision": precision, "gflops": 0.0, "size": None}
    generator = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=generator).to(device)
        if precision == "int8":
            layer = quantize_linears(torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)))

            def product(a=a, layer=layer):
                return layer(a)
        else:
            dtype = AUTOCAST_DTYPES.get(precision, torch.float32)
            a = a.to(dtype)
            b = torch.randn(n, n, generator=generator).to(device, dtype)

            def product(a=a, b=b):
                return a @ b

        with torch.no_grad():
            product()
            sync()
            seconds = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                product()
                sync()
                seconds = min(seconds, time.perf_counter() - start)
        gflops = 2 * n**3 / seconds / 1e9
        if gflops > best["gflops"]:
            best = {"precision": precision, "gflops": gflops, "size": n}
    return best


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    from ovseg.apps.arguments import precision_list
    from ovseg.precision import detect_hardware

    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "--precisions",
        type=precision_list,
        default="fp32,bf16,int8",
        help="comma-separated: fp32, bf16, fp16, int8 (default: fp32,bf16,int8)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hardware = detect_hardware(args.device)
    print(f"{hardware.describe()}, torch {torch.__version__}, {args.threads} threads")
    results = []
    if "auto" in args.precisions:
        parser.error("--precisions: name the precisions to measure (auto is not one)")
    for precision in args.precisions:
        if precision == "int8" and (args.device != "cpu" or not hardware.int8):
            print(f"{precision:<6}skipped: int8 kernels run on a CPU with an int8 engine only")
            continue
        result = peak_matmul_gflops(precision, device=args.device)
        results.append(result)
        print(f"{precision:<6}{result['gflops']:>8.0f} GFLOP/s  (n = {result['size']})")
    if args.json:
        from ovseg.fileio import write_text_atomic

        write_text_atomic(
            args.json, json.dumps({"hardware": hardware.describe(), "peaks": results})
        )
    return 0
