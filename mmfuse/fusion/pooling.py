"""Pooling of a token sequence into one vector per sample."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Pooling = Literal["mean", "cls"]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of the real tokens: ``x [B, L, d]``, ``mask [B, L]`` bool → ``[B, d]`` (zeros for a
    sample without real tokens, e.g. a text-only sample's placeholder image)."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def pool(x: Tensor, mask: Tensor, mode: Pooling) -> Tensor:
    """``"mean"``: :func:`masked_mean`; ``"cls"``: the first token (``[CLS]`` / the class token)."""
    if mode == "mean":
        return masked_mean(x, mask)
    if mode == "cls":
        return x[:, 0]
    raise ValueError(f"pooling: expected 'mean' or 'cls', got {mode!r}")
