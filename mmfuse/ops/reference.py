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
    out_i = sum_{j in V} a_j v_j ;  scores = n

Non-finite values: NaN / inf at a valid position propagate to the row's ``out`` and
``scores`` (IEEE arithmetic); values at masked keys are selected away with ``where`` and never
reach the valid outputs; the cosine is computed from row-max-scaled vectors (no overflow).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mmfuse.ops.validation import check_gra_inputs

COSINE_EPS = 1e-8


def _row_absmax(x: Tensor) -> Tensor:
    """max |x| of each row, detached: [..., Lk] → [..., 1]; 0 for rows without keys (Lk = 0),
    where ``amax`` would reject the empty dimension."""
    if x.shape[-1] == 0:
        return x.new_zeros((*x.shape[:-1], 1))
    return x.detach().abs().amax(-1, keepdim=True)


def _cosine(s: Tensor, p: Tensor, valid: Tensor) -> Tensor:
    """Cosine of ``s`` and ``p`` over the valid keys of each row: [B, H, Lq, Lk] → [B, H, Lq].

    Masked keys are *selected* away (``where``), so an inf or NaN there cannot reach the
    result. Each vector is divided by its row's largest |value| before the products, so the
    squares cannot overflow (float32 stays exact-ish for |s|, |p| up to 1e18 and beyond); the
    ``COSINE_EPS`` clamp applies to the true norm product. When that product is below
    ``COSINE_EPS`` the denominator is clamped and, as the contract says, no gradient flows
    through the cosine (its value is ``dot / eps``). NaN or inf at a valid key gives NaN.
    """
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    s_v = torch.where(valid, s, zero)
    p_v = torch.where(valid, p, zero)
    # row scales (constants for autograd: the cosine does not depend on them)
    ms, mp = _row_absmax(s_v), _row_absmax(p_v)
    ms_div = torch.where(ms > 0, ms, torch.ones_like(ms))
    mp_div = torch.where(mp > 0, mp, torch.ones_like(mp))
    s_h, p_h = s_v / ms_div, p_v / mp_div
    dot_h = (s_h * p_h).sum(-1)
    norm_h = (s_h * s_h).sum(-1).sqrt() * (p_h * p_h).sum(-1).sqrt()
    row_scale = (ms_div * mp_div).squeeze(-1)
    clamped = norm_h * row_scale < COSINE_EPS
    # divide only by safe values, so that the unused branch cannot produce inf/NaN gradients
    safe_norm = torch.where(clamped, torch.ones_like(norm_h), norm_h)
    return torch.where(clamped, (dot_h * row_scale).detach() / COSINE_EPS, dot_h / safe_norm)


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
            c = _cosine(s, p, valid)  # [B, H, Lq]
            w = gate_weight.to(compute_dtype).view(1, H, 1)
            b = gate_bias.to(compute_dtype).view(1, H, 1)
            g = torch.sigmoid(w * c + b)
            n = (g.unsqueeze(-1) * s + p) / 2

    valid_full = valid.expand(B, H, Lq, Lk)
    row_has_key = valid_full.any(-1, keepdim=True)
    # masked keys get -inf; rows without any valid key get finite logits and are zeroed below,
    # so a fully masked row never produces NaN. Everything at masked keys is selected away
    # (never multiplied by the mask: inf * 0 = NaN), so it cannot reach the valid outputs.
    logits = torch.where(valid_full, n, torch.where(row_has_key, float("-inf"), 0.0))
    a = torch.where(valid_full, torch.softmax(logits, dim=-1), 0.0)
    if key_mask is not None:
        v = torch.where(valid.transpose(-1, -2), v, 0.0)  # v rows of masked keys: [B, 1, Lk, 1]
    out = torch.matmul(a, v)
    return out.to(out_dtype), n.to(out_dtype)
