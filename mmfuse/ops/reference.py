"""Eager PyTorch reference of the gated residual attention op, written for clarity.

It is the oracle of the tests and the fallback when the compiled kernels are unavailable.
Half-precision inputs are computed in float32 (as the kernels accumulate) and the outputs
cast back to the input dtype. Autograd of this code *is* the reference backward.

Per batch b, head h and query row i (V = the valid keys of the row)::

    s_j = scale * <q_i, k_j>
    none / prev None : n = s
    residual         : n = s + p                              (RealFormer)
    gated            : c = <s_V, p_V> / max(|s_V| |p_V|, 1e-8)  (0 when V is empty)
                       g = sigmoid(gate_weight[h] * c + gate_bias[h])
                       n = (g * s + p) / 2
    a = softmax(n over V), 0 on masked keys (all-zero for a row without valid keys)
    out_i = sum_j a_j v_j ;  scores = n
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mmfuse.ops.validation import check_gra_inputs

COSINE_EPS = 1e-8


def _cosine(s: Tensor, p: Tensor, valid: Tensor) -> Tensor:
    """Cosine of ``s`` and ``p`` over the valid keys of each row: [B, H, Lq, Lk] → [B, H, Lq].

    When the norm product is below ``COSINE_EPS`` the denominator is clamped and, as the
    contract says, no gradient flows through the cosine (its value is ``dot / eps``).
    """
    s_v = s * valid
    p_v = p * valid
    dot = (s_v * p_v).sum(-1)
    norm_sq = (s_v * s_v).sum(-1) * (p_v * p_v).sum(-1)
    clamped = norm_sq < COSINE_EPS**2
    # sqrt only of safe values, so that the unused branch cannot produce inf/NaN gradients
    safe_norm = torch.where(clamped, torch.ones_like(norm_sq), norm_sq).sqrt()
    return torch.where(clamped, dot.detach() / COSINE_EPS, dot / safe_norm)


def gated_residual_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    prev: Optional[Tensor] = None,
    key_mask: Optional[Tensor] = None,
    gate_weight: Optional[Tensor] = None,
    gate_bias: Optional[Tensor] = None,
    mode: str = "gated",
    scale: Optional[float] = None,
) -> tuple[Tensor, Tensor]:
    """Eager gated residual attention: returns ``(out [B,H,Lq,Dv], scores [B,H,Lq,Lk])``."""
    scale = check_gra_inputs(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale)
    out_dtype = q.dtype
    compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v = (t.to(compute_dtype) for t in (q, k, v))
    B, H, Lq, _ = q.shape
    Lk = k.shape[2]

    s = scale * torch.matmul(q, k.transpose(-1, -2))  # [B, H, Lq, Lk]
    if key_mask is None:
        valid = torch.ones(B, 1, 1, Lk, dtype=torch.bool, device=q.device)
    else:
        valid = key_mask[:, None, None, :]

    if prev is None or mode == "none":
        n = s
    else:
        p = prev.to(compute_dtype)
        if mode == "residual":
            n = s + p
        else:  # gated
            c = _cosine(s, p, valid.to(compute_dtype))  # [B, H, Lq]
            w = gate_weight.to(compute_dtype).view(1, H, 1)
            b = gate_bias.to(compute_dtype).view(1, H, 1)
            g = torch.sigmoid(w * c + b)
            n = (g.unsqueeze(-1) * s + p) / 2

    valid_full = valid.expand(B, H, Lq, Lk)
    row_has_key = valid_full.any(-1, keepdim=True)
    # masked keys get -inf; rows without any valid key get finite logits and are zeroed below,
    # so neither the forward nor the backward ever sees NaN.
    logits = torch.where(valid_full, n, torch.where(row_has_key, float("-inf"), 0.0))
    a = torch.softmax(logits, dim=-1) * valid_full
    out = torch.matmul(a, v)
    return out.to(out_dtype), n.to(out_dtype)
