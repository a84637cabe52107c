"""Process-group set-up for ``torchrun`` and the few collectives the trainer needs.

``torchrun --nproc_per_node N -m mmfuse train ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`setup_distributed` then joins the process group (NCCL on CUDA, gloo on
CPU) and picks the device. Without those variables everything runs in one process and the
collectives below are no-ops.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch import Tensor

from mmfuse.core.config import ConfigError


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, which alone writes logs, checkpoints and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"training.device: expected auto, cpu, cuda or cuda:N, got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device: {device!r} requested but CUDA is not available")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank)
    return resolved


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group if the environment describes one; return the context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved)


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(values: Tensor, ctx: DistributedContext) -> Tensor:
    """Sum ``values`` over all ranks (returns a new tensor on ``values``' device)."""
    if not ctx.distributed:
        return values
    reduced = values.detach().clone().to(ctx.device)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(values.device)


def broadcast_object(value: object, ctx: DistributedContext) -> object:
    """Rank 0's ``value`` on every rank."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
