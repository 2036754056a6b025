"""How many CPU threads a command's torch work uses.

torch's own default is the machine's physical core count, which ignores a container's or
``taskset``'s CPU set and, under torchrun, gives every process all the cores. On a busy machine
more threads than free cores is far slower than fewer: their barriers wait for the slowest
(2 threads measured 10x slower than 1 there). The default here is the cores this process may
use, shared among torchrun's processes on this machine; ``--threads`` overrides it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity set; the CPU count where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_threads(environ: Mapping[str, str] | None = None, cores: int | None = None) -> int:
    """``OMP_NUM_THREADS`` where set (the usual way to say it), else :func:`usable_cores`
    divided among torchrun's processes on this machine (``LOCAL_WORLD_SIZE``, else
    ``WORLD_SIZE``), at least 1."""
    environ = os.environ if environ is None else environ
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) >= 1:
        return int(given)
    processes = environ.get("LOCAL_WORLD_SIZE") or environ.get("WORLD_SIZE") or "1"
    processes = int(processes) if processes.isdigit() and int(processes) >= 1 else 1
    return max(1, (usable_cores() if cores is None else cores) // processes)


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (None: :func:`default_threads`); returns the number.
    Raises ValueError below 1."""
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: give 1 or more")
    count = default_threads() if threads is None else threads
    torch.set_num_threads(count)
    return count
