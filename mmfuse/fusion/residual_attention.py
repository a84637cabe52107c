"""Multi-head residual attention (RADM's MHRA) around the fused gated residual attention op.

The module owns the query / key / value / output projections and, in ``"gated"`` mode, the
per-head gate parameters ``gate_weight`` and ``gate_bias`` (``[H]``); the attention itself is
:func:`mmfuse.ops.gated_residual_attention`. Each call returns the combined scores ``n`` so
that the next layer can pass them back as ``prev``:

* ``"none"``: plain multi-head attention (``prev`` is ignored);
* ``"residual"``: RealFormer, ``n = s + prev``;
* ``"gated"``: RADM's adaptive gate, ``n = (g·s + prev) / 2`` with
  ``g = sigmoid(gate_weight[h] · cos(s, prev) + gate_bias[h])`` per head and query row.

Dropout: the op computes the softmax internally and does not expose the attention weights, so
there is **no dropout on the attention probabilities**; ``dropout`` is applied to the output
(after the output projection), where transformer blocks put their residual dropout.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from mmfuse.core.config import ConfigError
from mmfuse.ops import gated_residual_attention
from mmfuse.ops.attention import Impl
from mmfuse.ops.validation import Mode

IMPLS: tuple[str, ...] = ("auto", "fused", "reference")


class ResidualAttention(nn.Module):
    """Multi-head (gated) residual attention.

    Args:
        d_model: width of the inputs and the output; split into ``n_heads`` heads.
        n_heads: number of heads ``H``.
        mode: ``"none"``, ``"residual"`` or ``"gated"`` (see the module docstring).
        dropout: dropout on the output (none on the attention weights — see above).
        impl: ``"auto"`` (fused kernel when built for the device and dtype, else the eager
            reference), ``"fused"`` or ``"reference"``; see :func:`set_attention_impl`.

    ``forward(x_q [B, Lq, d], x_kv [B, Lk, d] | None (self-attention), key_mask [B, Lk] bool | None,
    prev [B, H, Lq, Lk] | None)`` returns ``(out [B, Lq, d], scores [B, H, Lq, Lk])``.
    """

    def __init__(self, d_model: int, n_heads: int, mode: Mode = "gated", dropout: float = 0.0,
                 impl: Impl = "auto") -> None:
        super().__init__()
        if n_heads < 1 or d_model % n_heads:
            raise ConfigError(f"n_heads: must divide d_model={d_model}, got {n_heads}")
        if mode not in ("none", "residual", "gated"):
            raise ConfigError(f"mode: expected one of 'none', 'residual', 'gated', got {mode!r}")
        if impl not in IMPLS:
            raise ConfigError(f"impl: expected one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
        self.d_model, self.n_heads, self.mode, self.impl = d_model, n_heads, mode, impl
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        if mode == "gated":
            # g = sigmoid(w·cos + b) starts at sigmoid(cos): similar maps keep more of the new scores
            self.gate_weight = nn.Parameter(torch.ones(n_heads))
            self.gate_bias = nn.Parameter(torch.zeros(n_heads))
        else:
            self.register_parameter("gate_weight", None)
            self.register_parameter("gate_bias", None)

    def forward(
        self,
        x_q: Tensor,
        x_kv: Tensor | None = None,
        key_mask: Tensor | None = None,
        prev: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        x_kv = x_q if x_kv is None else x_kv
        q = rearrange(self.q_proj(x_q), "b l (h d) -> b h l d", h=self.n_heads)
        k = rearrange(self.k_proj(x_kv), "b l (h d) -> b h l d", h=self.n_heads)
        v = rearrange(self.v_proj(x_kv), "b l (h d) -> b h l d", h=self.n_heads)
        if prev is not None and self.mode == "none":
            prev = None  # plain attention: the previous scores play no part
        if prev is not None and prev.dtype != q.dtype:  # e.g. scores from outside an autocast region
            prev = prev.to(q.dtype)
        gate_weight = self.gate_weight.to(q.dtype) if self.gate_weight is not None else None
        gate_bias = self.gate_bias.to(q.dtype) if self.gate_bias is not None else None
        out, scores = gated_residual_attention(
            q, k, v, prev=prev, key_mask=key_mask, gate_weight=gate_weight, gate_bias=gate_bias,
            mode=self.mode, impl=self.impl,
        )
        out = self.out_proj(rearrange(out, "b h l d -> b l (h d)"))
        return self.dropout(out), scores

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, mode={self.mode!r}, impl={self.impl!r}"


def set_attention_impl(module: nn.Module, impl: Impl) -> int:
    """Set ``impl`` on every :class:`ResidualAttention` inside ``module``; returns how many.

    ``impl="reference"`` runs the eager PyTorch reference, e.g. to compare it with the kernel.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
    count = 0
    for sub in module.modules():
        if isinstance(sub, ResidualAttention):
            sub.impl = impl
            count += 1
    return count
