"""torch.distributed helpers for torchrun (training, evaluation, prediction): NCCL on GPUs,
gloo on CPU."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Imported before any group exists, on purpose: torch.distributed.nn.functional binds
# group.WORLD into default arguments when first imported (DistributedDataParallel imports it),
# which would keep the default group, and its threads, alive until interpreter exit.
import torch.distributed.nn  # noqa: F401


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA GPU is available")
    target = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world_size, local_rank, target)


def all_reduce_sum(value: float, info: DistInfo) -> float:
    """Sum a number over all processes (the number itself when not distributed)."""
    if not info.enabled:
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average named numbers over all processes (one collective call)."""
    if not info.enabled:
        return dict(values)
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return {n: float(v) / info.world_size for n, v in zip(names, tensor.tolist(), strict=True)}


def shard(count: int, info: DistInfo) -> range:
    """This process's share of ``count`` items: every world_size-th from its rank (item i goes
    to rank i % world_size), the same on every run."""
    return range(info.rank, count, info.world_size)


def global_position(rank: int, local_index: int, info: DistInfo) -> int:
    """The position in the full list of a rank's ``local_index``-th item of :func:`shard`."""
    return rank + local_index * info.world_size


def all_reduce_arrays(arrays: list, info: DistInfo) -> None:
    """Sum numpy arrays over all processes, in place (int64 / float64 kept exact per
    element; float sums may differ from one process's in the last bits)."""
    if not info.enabled:
        return
    import numpy as np

    for array in arrays:
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(info.device)
        dist.all_reduce(tensor)
        array[...] = tensor.cpu().numpy()


def all_gather_objects(value, info: DistInfo) -> list:
    """Every process's ``value`` (picklable), in rank order, on every process."""
    if not info.enabled:
        return [value]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value, info: DistInfo):
    """Rank 0's ``value`` on every process."""
    if not info.enabled:
        return value
    holder = [value if info.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def cleanup(info: DistInfo) -> None:
    """Leave the process group and stop gloo's worker threads while Python is still whole.

    Call it once the DistributedDataParallel wrapper is out of scope: collecting it (it sits
    in reference cycles) leaves destroy_process_group the group's last reference, so the group
    is freed and its threads joined here. A group that outlives this (see the import of
    torch.distributed.nn above) keeps threads that can drop a finished collective's tensors
    during interpreter exit, without the GIL, and abort the process ("terminate called without
    an active exception", about 1 run in 30 on a loaded 2-core machine).
    """
    if info.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
