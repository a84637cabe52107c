"""Base class of streaming metrics whose state is a set of counts that add up across batches and ranks.

Counts (confusion matrices, true/false positives, ...) make evaluation exact under data
parallelism: each rank counts its shard of the evaluation set, :meth:`CountingMetric.sync`
sums the counts of all ranks with one ``all_reduce`` per tensor, and every rank then computes the
same metrics for the whole set. The trainer's evaluators (classification here, span extraction
in :mod:`mmfuse.metrics.span`) build on this.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor


class CountingMetric(abc.ABC):
    """A metric whose state is ``self.counts``: name → integer or float tensor, summed over updates.

    Subclasses fill ``counts`` in ``update(...)`` and turn them into numbers in :meth:`compute`.
    """

    def __init__(self, counts: Mapping[str, Tensor]) -> None:
        self.counts: dict[str, Tensor] = dict(counts)
        self._initial = {name: value.clone() for name, value in self.counts.items()}

    def reset(self) -> None:
        """Back to the state after construction."""
        self.counts = {name: value.clone() for name, value in self._initial.items()}

    def sync(self, group: dist.ProcessGroup | None = None) -> None:
        """Sum the counts over all ranks (no-op unless ``torch.distributed`` is initialised).

        With the NCCL backend the counts travel through the current CUDA device.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else None
        for name in sorted(self.counts):  # same order on every rank
            value = self.counts[name]
            reduced = value.to(device) if device is not None else value.clone()
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
            self.counts[name] = reduced.to(value.device)

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """Metric name → value from the current counts."""
