"""Public API of the fused gated residual attention op and its torch.library registration.

``torch.ops.mmfuse.gated_residual_attention`` is defined in C++ (``csrc/``), with CPU and
CUDA kernels. This module registers, from Python, the two pieces torch.library expects
there: the fake (meta) implementation for tracing / ``torch.compile``, and the autograd
formula, whose backward is the fused ``torch.ops.mmfuse.gated_residual_attention_backward``.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor

from mmfuse.ops._extension import load_extension
from mmfuse.ops.reference import gated_residual_attention_reference
from mmfuse.ops.validation import FUSED_DTYPES, check_gra_inputs

OP_NAME = "mmfuse::gated_residual_attention"
BACKWARD_OP_NAME = "mmfuse::gated_residual_attention_backward"

Impl = Literal["auto", "fused", "reference"]

_REGISTERED = False


def _register() -> bool:
    """Register fake kernels and autograd for the C++ ops once; False if the extension is absent."""
    global _REGISTERED
    if _REGISTERED:
        return True
    if load_extension() is None:
        return False

    @torch.library.register_fake(OP_NAME)
    def _forward_fake(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale):
        B, H, Lq, _ = q.shape
        return q.new_empty((B, H, Lq, v.shape[-1])), q.new_empty((B, H, Lq, k.shape[2]))

    @torch.library.register_fake(BACKWARD_OP_NAME)
    def _backward_fake(grad_out, grad_scores, q, k, v, prev, key_mask, gate_weight, gate_bias, scores, mode, scale):
        grad_prev = torch.empty_like(prev, memory_format=torch.contiguous_format) if prev is not None else q.new_empty(0)
        gated = mode == "gated" and prev is not None
        grad_w = gate_weight.new_empty(gate_weight.shape) if gated else q.new_empty(0)
        grad_b = gate_bias.new_empty(gate_bias.shape) if gated else q.new_empty(0)
        return (
            q.new_empty(q.shape),
            k.new_empty(k.shape),
            v.new_empty(v.shape),
            grad_prev,
            grad_w,
            grad_b,
        )

    def _setup_context(ctx, inputs, output):
        q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale = inputs
        _, scores = output
        ctx.save_for_backward(q, k, v, prev, key_mask, gate_weight, gate_bias, scores)
        ctx.mode, ctx.scale = mode, scale

    def _backward(ctx, grad_out, grad_scores):
        q, k, v, prev, key_mask, gate_weight, gate_bias, scores = ctx.saved_tensors
        grad_q, grad_k, grad_v, grad_prev, grad_w, grad_b = torch.ops.mmfuse.gated_residual_attention_backward(
            grad_out, grad_scores, q, k, v, prev, key_mask, gate_weight, gate_bias, scores, ctx.mode, ctx.scale
        )
        gated = ctx.mode == "gated" and prev is not None
        return (
            grad_q,
            grad_k,
            grad_v,
            grad_prev if prev is not None else None,
            None,  # key_mask
            grad_w if gated else None,
            grad_b if gated else None,
            None,  # mode
            None,  # scale
        )

    torch.library.register_autograd(OP_NAME, _backward, setup_context=_setup_context)
    _REGISTERED = True
    return True


def fused_kernel_available(device: torch.device | str, dtype: torch.dtype | None = None) -> bool:
    """True when a compiled kernel of the op exists for ``device`` (and supports ``dtype``)."""
    if not _register():
        return False
    device_type = torch.device(device).type
    if not _has_kernel_for(device_type):
        return False
    return dtype is None or dtype in FUSED_DTYPES.get(device_type, ())


@torch.compiler.assume_constant_result
def _has_kernel_for(device_type: str) -> bool:
    """Whether the op has a kernel for the device type's dispatch key. A constant under
    ``torch.compile`` (the dispatcher query returns a non-tensor that Dynamo cannot trace)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, key)


def gated_residual_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    prev: Optional[Tensor] = None,
    key_mask: Optional[Tensor] = None,
    gate_weight: Optional[Tensor] = None,
    gate_bias: Optional[Tensor] = None,
    mode: str = "gated",
    scale: Optional[float] = None,
    *,
    impl: Impl = "auto",
) -> tuple[Tensor, Tensor]:
    """Multi-head residual attention with an adaptive gate (RADM), fused.

    Args:
        q: queries ``[B, H, Lq, D]``; k: keys ``[B, H, Lk, D]``; v: values ``[B, H, Lk, Dv]``.
        prev: the previous layer's ``scores`` ``[B, H, Lq, Lk]`` or None (first layer).
        key_mask: ``[B, Lk]`` bool, True where the key takes part (HF / SDPA convention).
        gate_weight, gate_bias: ``[H]`` per-head gate parameters; required when ``mode="gated"``.
        mode: ``"none"`` (plain attention), ``"residual"`` (RealFormer: ``n = s + prev``) or
            ``"gated"`` (``n = (g * s + prev) / 2`` with ``g = sigmoid(w * cos(s, prev) + b)``).
        scale: score scale, default ``1 / sqrt(D)``.
        impl: ``"auto"`` (fused kernel when available for the device and dtype, else the eager
            reference), ``"fused"`` (error if no kernel), ``"reference"``.

    Returns:
        ``(out [B, H, Lq, Dv], scores [B, H, Lq, Lk])``; pass ``scores`` as the next layer's ``prev``.
    """
    scale = check_gra_inputs(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale)
    if impl == "reference":
        return gated_residual_attention_reference(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale)
    if impl not in ("auto", "fused"):
        raise ValueError(f"impl: expected 'auto', 'fused' or 'reference', got {impl!r}")
    if fused_kernel_available(q.device, q.dtype):
        out, scores = torch.ops.mmfuse.gated_residual_attention(
            q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale
        )
        return out, scores
    if impl == "fused":
        raise RuntimeError(
            f"impl='fused': no compiled mmfuse kernel for device {q.device.type!r} and dtype {q.dtype} "
            f"(supported: {', '.join(f'{d}: {[str(t) for t in ts]}' for d, ts in FUSED_DTYPES.items())})"
        )
    return gated_residual_attention_reference(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale)
