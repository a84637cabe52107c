"""Gathering a batch-level tensor from every data-parallel rank, with gradients.

Contrastive losses compare every sample with every other sample of the *global* batch.
Under DDP each rank holds only its slice, so the slices are all-gathered. The gather must be
differentiable: its backward returns to each rank the *sum over ranks* of the gradients of that
rank's output slice (a reduce-scatter), so a rank's local rows receive the gradient of every
rank's loss — not only of its own. PyTorch's functional collective
``all_gather_single_autograd`` does that; older PyTorch falls back to
:func:`torch.distributed.nn.functional.all_gather` (same semantics, now deprecated).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

try:  # PyTorch >= 2.6
    from torch.distributed._functional_collectives import all_gather_single_autograd as _functional_all_gather
except ImportError:  # pragma: no cover - older PyTorch
    _functional_all_gather = None


def _all_gather_autograd(x: Tensor) -> Tensor:
    """``[world * B, ...]``: the equal-sized ``x`` of every rank, concatenated in rank order."""
    if _functional_all_gather is not None:
        return _functional_all_gather(x.contiguous(), 0, dist.group.WORLD)
    import torch.distributed.nn.functional as dist_fn  # pragma: no cover - older PyTorch

    return torch.cat(dist_fn.all_gather(x))  # pragma: no cover


def data_parallel_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` outside distributed runs."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``x`` (``[B_r, ...]`` on rank r) over all ranks along dim 0.

    Returns ``(gathered [sum_r B_r, ...], offset)`` where ``offset`` is the index of this
    rank's first row in ``gathered`` (the rows are in rank order). Ranks may hold different
    batch sizes (the slices are padded for the collective and trimmed after it). Outside a
    distributed run this is ``(x, 0)``. Every rank must call it (it is a collective).
    """
    rank, world = data_parallel_world()
    if world == 1:
        return x, 0
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes_t = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    longest = max(sizes)
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])])
    parts = _all_gather_autograd(x).split(longest)
    gathered = torch.cat([part[:n] for part, n in zip(parts, sizes)])
    return gathered, sum(sizes[:rank])
