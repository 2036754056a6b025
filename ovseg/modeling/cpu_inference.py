"""When the inference-only CPU passes apply, and numba's threads for them.

The compiled (numba) kernels and the block-at-a-time passes of the model
(``deformable_cpu``, ``mask_resize``, the decoders' attention mask, mask pooling and
feed-forward blocks) replace PyTorch code only at CPU inference: gradients, other devices,
float64, tracing and export keep the PyTorch path they are tested against.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import torch


@contextmanager
def numba_threads_as_torch():
    """Runs the block's numba kernels on torch's thread count. numba's OpenMP layer shares it
    with torch: setting numba's sets torch's, so torch's is restored after (a restore to
    numba's default made a --threads 1 run use 2 threads)."""
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cpu_inference_applies(*tensors: torch.Tensor) -> bool:
    """True where an inference-only CPU pass (a compiled kernel, or work in cache-sized
    blocks) may replace the plain PyTorch one: CPU tensors of at most float32 precision, no
    gradient wanted, not being traced, exported or compiled."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if any(t.device.type != "cpu" or t.dtype == torch.float64 for t in tensors):
        return False  # the compiled pass is float32 (bf16 / fp16 inputs are widened)
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return not (tracing or compiling or exporting)
