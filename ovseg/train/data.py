"""Deterministic training batches: which samples each iteration and process sees, and their
augmentation, are functions of (seed, iteration), so resuming continues the same sequence
and data-parallel runs see exactly the samples of a single-process run."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed mixed from any parts (stable across runs and processes)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class IterationBatchSampler(torch.utils.data.Sampler):
    """Yields, for each iteration from ``start_iteration``, this process's share of the global
    batch as (epoch, index, global position) keys. Epochs are seeded permutations."""

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        *,
        seed: int,
        start_iteration: int,
        max_iterations: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples == 0:
            raise ValueError("the training dataset is empty")
        if global_batch % world_size:
            raise ValueError(
                f"batch size {global_batch} is not divisible by the {world_size} processes"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.per_rank = global_batch // world_size
        self.seed, self.rank = seed, rank
        self.start, self.stop = start_iteration, max_iterations
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, "epoch", epoch))
            self._perm = (epoch, torch.randperm(self.num_samples, generator=generator))
        return self._perm[1]

    def keys(self, iteration: int) -> list[tuple[int, int, int]]:
        keys = []
        first = iteration * self.global_batch + self.rank * self.per_rank
        for position in range(first, first + self.per_rank):
            epoch, offset = divmod(position, self.num_samples)
            keys.append((epoch, int(self._permutation(epoch)[offset]), position))
        return keys

    def __iter__(self):
        for iteration in range(self.start, self.stop):
            yield self.keys(iteration)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class AugmentedSamples(torch.utils.data.Dataset):
    """Applies the training transform with a generator seeded by (seed, epoch, index)."""

    def __init__(self, dataset, transform, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        epoch, index, position = key
        rng = np.random.default_rng(derived_seed(self.seed, "augment", epoch, index))
        sample = self.transform(self.dataset[index], rng)
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1),
            "masks": torch.from_numpy(np.ascontiguousarray(sample["masks"])).float(),
            "labels": torch.as_tensor(sample["labels"], dtype=torch.int64),
            "position": position,
        }
        if "valid" in sample:  # False on the transform's padding (not void: no image there)
            out["valid"] = torch.from_numpy(np.ascontiguousarray(sample["valid"]))
        return out


def collate(samples: list[dict]) -> dict:
    keys = ("masks", "labels", "valid")
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "targets": [{k: s[k] for k in keys if k in s} for s in samples],
        "positions": [s["position"] for s in samples],
    }
