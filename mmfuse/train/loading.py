"""Data loading that makes training reproducible and exactly resumable.

* **Order**: each epoch's order is :class:`~torch.utils.data.DistributedSampler`'s permutation
  for ``(seed, epoch)`` (also in one process), sharded over the ranks; a resumed run skips the
  batches already done without loading them.
* **Augmentation**: the collator (which calls the model's processor, i.e. timm's random
  transforms) runs with torch / NumPy / Python RNGs seeded from ``(seed, epoch, batch, rank)``
  and restored afterwards. Augmentation is therefore a function of the batch's position, the
  same whether the run was resumed or not and whatever ``num_workers`` is, and it never
  consumes the main process's RNG (which drives dropout and is checkpointed).
* Loaders get their own ``torch.Generator``, so creating one does not consume global RNG either.

Evaluation loaders shard the data without padding (rank ``r`` takes items ``r, r + W, ...``),
so DDP metrics count every item exactly once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

#: (epoch, batch index within the epoch, index into the data set)
ItemKey = tuple[int, int, int]


class _Sized(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:  # pragma: no cover - never read
        return index


def epoch_indices(n: int, *, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool) -> list[int]:
    """This rank's data-set indices for ``epoch``.

    Shuffled: DistributedSampler's permutation (padded by repeating items so every rank gets
    ``ceil(n / world_size)``). Not shuffled: ``rank, rank + world_size, ...`` without padding.
    """
    if not shuffle:
        return list(range(rank, n, world_size))
    sampler = DistributedSampler(_Sized(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


class KeyedBatchSampler(Sampler[list[ItemKey]]):
    """Batches of :data:`ItemKey` for one epoch of one rank, starting after ``skip_batches``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        skip_batches: int = 0,
    ) -> None:
        self.indices = epoch_indices(n, seed=seed, epoch=epoch, rank=rank, world_size=world_size, shuffle=shuffle)
        self.batch_size = batch_size
        self.epoch = epoch
        self.skip_batches = skip_batches

    @property
    def num_batches(self) -> int:
        """Batches in the whole epoch (skipped ones included)."""
        return math.ceil(len(self.indices) / self.batch_size)

    def __len__(self) -> int:
        return max(0, self.num_batches - self.skip_batches)

    def __iter__(self) -> Iterator[list[ItemKey]]:
        for b in range(self.skip_batches, self.num_batches):
            chunk = self.indices[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(self.epoch, b, i) for i in chunk]


class KeyedDataset(Dataset):
    """``dataset[(epoch, batch, index)] -> ((epoch, batch, index), dataset[index])``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: ItemKey) -> tuple[ItemKey, Any]:
        return key, self.dataset[key[2]]


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class SeededCollate:
    """Call ``collate`` on a keyed batch with every RNG seeded from ``(seed, epoch, batch, rank)``."""

    def __init__(self, collate: Any, seed: int, rank: int = 0) -> None:
        self.collate = collate
        self.seed = seed
        self.rank = rank

    def __call__(self, items: Sequence[tuple[ItemKey, Any]]) -> Any:
        epoch, batch_index, _ = items[0][0]
        seed = _seed_for(self.seed, epoch, batch_index, self.rank)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed)
                return self.collate([sample for _, sample in items])
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def make_loader(
    dataset: Dataset,
    collate: Any,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool,
    skip_batches: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` for one epoch of one rank (see the module docstring)."""
    sampler = KeyedBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        shuffle=shuffle,
        skip_batches=skip_batches,
    )
    return DataLoader(
        KeyedDataset(dataset),
        batch_sampler=sampler,
        collate_fn=SeededCollate(collate, seed, rank),
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )


def move_to_device(value: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``value`` with every tensor (in nested dicts / lists / tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: move_to_device(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict)) for v in value):
        return type(value)(move_to_device(v, device, non_blocking) for v in value)
    return value


def batch_size_of(batch: Any) -> int:
    """Rows in a batch: the leading size of its first tensor (``input_ids`` when present)."""
    if isinstance(batch, dict):
        first = batch.get("input_ids")
        if isinstance(first, torch.Tensor):
            return int(first.shape[0])
        for value in batch.values():
            size = batch_size_of(value)
            if size:
                return size
    if isinstance(batch, torch.Tensor) and batch.dim():
        return int(batch.shape[0])
    return 0
