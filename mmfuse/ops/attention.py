"""Public API of the fused gated residual attention op and its torch.library registration.

``torch.ops.mmfuse.gated_residual_attention`` is defined in C++ (``csrc/``), with CPU and
CUDA kernels. This module completes it, **at import** (``import mmfuse`` imports it), as
pytorch/extension-cpp and torchvision do:

* fake (meta) implementations of the forward and backward ops, which validate their
  arguments with exactly the kernels' messages (:func:`mmfuse.ops.validation.check_gra_inputs`)
  and return outputs of the right shape: meta tensors, ``torch.compile`` and ``torch.export``
  work without a first eager call;
* an autograd kernel (:func:`_autograd_kernel`): first-order backward through the fused
  ``gated_residual_attention_backward`` kernel; double backward (``create_graph=True``),
  forward-mode AD (``torch.autograd.forward_ad``, ``torch.func.jvp``) and the other functorch
  transforms through the eager reference, so no autograd mode silently yields zeros.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from torch import Tensor
from torch.autograd import forward_ad

from mmfuse.ops._extension import load_extension
from mmfuse.ops.reference import gated_residual_attention_reference
from mmfuse.ops.validation import FUSED_DTYPES, check_gra_inputs, check_grad_shape, check_kernel_dtype

OP_NAME = "mmfuse::gated_residual_attention"
BACKWARD_OP_NAME = "mmfuse::gated_residual_attention_backward"

Impl = Literal["auto", "fused", "reference"]

#: positions of the differentiable inputs in the op's schema (q, k, v, prev, gate_weight, gate_bias)
_DIFF_POSITIONS = (0, 1, 2, 3, 5, 6)


def _forward_fake(
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
    """Shapes of ``(out [B, H, Lq, Dv], scores [B, H, Lq, Lk])``, after the kernels' checks."""
    check_gra_inputs(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale)
    check_kernel_dtype(q)
    B, H, Lq, _ = q.shape
    return q.new_empty((B, H, Lq, v.shape[-1])), q.new_empty((B, H, Lq, k.shape[2]))


def _backward_fake(
    grad_out: Tensor,
    grad_scores: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    prev: Optional[Tensor],
    key_mask: Optional[Tensor],
    gate_weight: Optional[Tensor],
    gate_bias: Optional[Tensor],
    scores: Tensor,
    mode: str,
    scale: Optional[float] = None,
) -> tuple[Tensor, ...]:
    """Shapes of ``(grad_q, grad_k, grad_v, grad_prev, grad_gate_weight, grad_gate_bias)``;
    the optional ones are empty when the input was absent (or, for the gates, unused)."""
    check_gra_inputs(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale)
    check_kernel_dtype(q)
    B, H, Lq, _ = q.shape
    check_grad_shape(grad_out, "grad_out", (B, H, Lq, v.shape[-1]), q)
    check_grad_shape(grad_scores, "grad_scores", (B, H, Lq, k.shape[2]), q)
    grad_prev = torch.empty_like(prev, memory_format=torch.contiguous_format) if prev is not None else q.new_empty(0)
    gated = mode == "gated" and prev is not None
    grad_w = gate_weight.new_empty(gate_weight.shape) if gated else q.new_empty(0)
    grad_b = gate_bias.new_empty(gate_bias.shape) if gated else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), grad_prev, grad_w, grad_b


def _reference_of(inputs: tuple[Any, ...], diff: tuple[Optional[Tensor], ...]) -> tuple[Tensor, Tensor]:
    """The eager reference on ``inputs`` with the differentiable ones replaced by ``diff``."""
    args = list(inputs)
    for pos, t in zip(_DIFF_POSITIONS, diff):
        args[pos] = t
    return gated_residual_attention_reference(*args)


class _GatedResidualAttentionFunction(torch.autograd.Function):
    """Autograd of ``torch.ops.mmfuse.gated_residual_attention`` (registered for the Autograd key).

    ``backward`` runs the fused backward kernel; when autograd records the backward itself
    (``create_graph=True``: double backward, gradient penalties), it differentiates the eager
    reference instead, whose graph autograd can differentiate again. The fused kernels are
    first-order only; forward-mode AD never reaches this class (see :func:`_autograd_kernel`).
    """

    @staticmethod
    def forward(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale, keyset):  # type: ignore[override]
        with torch._C._AutoDispatchBelowAutograd():
            op = torch.ops.mmfuse.gated_residual_attention.default
            return op.redispatch(
                keyset & torch._C._after_autograd_keyset, q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale
            )

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale, _ = inputs
        ctx.save_for_backward(q, k, v, prev, key_mask, gate_weight, gate_bias, output[1])
        ctx.mode, ctx.scale = mode, scale

    @staticmethod
    def backward(ctx, grad_out, grad_scores):  # type: ignore[override]
        q, k, v, prev, key_mask, gate_weight, gate_bias, scores = ctx.saved_tensors
        gated = ctx.mode == "gated" and prev is not None
        present = (True, True, True, prev is not None, gated, gated)
        needs = [ctx.needs_input_grad[pos] and ok for pos, ok in zip(_DIFF_POSITIONS, present)]
        if torch.is_grad_enabled():
            # create_graph=True: gradients that autograd can differentiate again
            inputs = (q, k, v, prev, key_mask, gate_weight, gate_bias, ctx.mode, ctx.scale)
            diff = (q, k, v, prev, gate_weight, gate_bias)
            wanted = [t for t, n in zip(diff, needs) if n]
            out_r, scores_r = _reference_of(inputs, diff)
            got = iter(
                torch.autograd.grad((out_r, scores_r), wanted, (grad_out, grad_scores), create_graph=True,
                                    allow_unused=True)
            )
            grads = [next(got) if n else None for n in needs]
        else:
            grads = list(
                torch.ops.mmfuse.gated_residual_attention_backward(
                    grad_out, grad_scores, q, k, v, prev, key_mask, gate_weight, gate_bias, scores, ctx.mode, ctx.scale
                )
            )
            grads = [g if n else None for g, n in zip(grads, needs)]
        grad_q, grad_k, grad_v, grad_prev, grad_w, grad_b = grads
        return grad_q, grad_k, grad_v, grad_prev, None, grad_w, grad_b, None, None, None


def _has_tangent(args: tuple[Any, ...]) -> bool:
    """Whether an argument is a dual tensor of ``torch.autograd.forward_ad`` (forward-mode AD)."""
    if forward_ad._current_level < 0:
        return False
    return any(isinstance(a, Tensor) and forward_ad.unpack_dual(a).tangent is not None for a in args)


def _autograd_kernel(keyset: torch._C.DispatchKeySet, *args: Any) -> tuple[Tensor, Tensor]:
    """The op's Autograd-key kernel.

    Reverse mode: :class:`_GatedResidualAttentionFunction` (fused forward and backward kernels).
    Forward mode (dual tensors of ``torch.autograd.forward_ad``) and functorch transforms
    (``torch.func.jvp``, ``grad``, ``vmap``, ...): the eager reference, which they differentiate
    (and batch) op by op, so that no autograd mode ever sees the op as a constant.
    """
    op = torch.ops.mmfuse.gated_residual_attention.default
    full, _ = torch._library.utils.fill_defaults(op._schema, args, {})
    if torch._C._are_functorch_transforms_active() or _has_tangent(full):
        return gated_residual_attention_reference(*full)
    if torch.is_grad_enabled() and torch._C._any_requires_grad(*full):
        return _GatedResidualAttentionFunction.apply(*full, keyset)
    with torch._C._AutoDispatchBelowAutograd():
        return op.redispatch(keyset & torch._C._after_autograd_keyset, *full)


def _register() -> bool:
    """Complete the C++-defined ops (fake implementations, autograd); False without the extension.

    Runs once, when this module is imported (``import mmfuse`` imports it).
    """
    if load_extension() is None:
        return False
    torch.library.register_fake(OP_NAME, _forward_fake, lib=_LIB)
    torch.library.register_fake(BACKWARD_OP_NAME, _backward_fake, lib=_LIB)
    _LIB.impl("gated_residual_attention", _autograd_kernel, "Autograd", with_keyset=True)
    return True


_LIB = torch.library.Library("mmfuse", "FRAGMENT")  # owns the registrations below (kept for the process)
_REGISTERED: bool = _register()


def fused_kernel_available(device: torch.device | str, dtype: torch.dtype | None = None) -> bool:
    """True when a compiled kernel of the op exists for ``device`` (and supports ``dtype``)."""
    if not _REGISTERED:
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
