"""Argument checks of the gated residual attention op, shared by the API and the reference.

Every check reads only metadata (rank, shape, dtype, device), so it also runs on fake
tensors under ``torch.compile`` without graph breaks. Messages name the argument, the
expected and the actual value. The C++ entry points (``csrc/gated_residual_attention.cpp``)
make the same checks in the same order with the same messages and exception types, and the
op's fake implementation calls these functions, so a bad call fails alike in eager mode, on
meta tensors and under ``torch.compile`` / ``torch.export``.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import Tensor

Mode = Literal["none", "residual", "gated"]
MODES: tuple[str, ...] = ("none", "residual", "gated")

#: dtypes each backend's fused kernel supports (the reference supports every float dtype)
FUSED_DTYPES: dict[str, tuple[torch.dtype, ...]] = {
    "cpu": (torch.float32, torch.float64, torch.bfloat16),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
}


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_gra_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    prev: Optional[Tensor],
    key_mask: Optional[Tensor],
    gate_weight: Optional[Tensor],
    gate_bias: Optional[Tensor],
    mode: str,
    scale: Optional[float],
) -> float:
    """Validate the op's arguments; return the resolved scale (default ``1/sqrt(D)``)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of 'none', 'residual', 'gated', got {mode!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4:
        raise ValueError(f"q: expected a 4-D tensor [B, H, Lq, D], got shape {_shape(q)}")
    if not q.is_floating_point():
        raise TypeError(f"q: expected a floating-point tensor, got {q.dtype}")
    B, H, Lq, D = q.shape
    if k.dim() != 4 or k.shape[0] != B or k.shape[1] != H or k.shape[3] != D:
        raise ValueError(f"k: expected shape [B={B}, H={H}, Lk, D={D}] to match q, got {_shape(k)}")
    Lk = k.shape[2]
    if v.dim() != 4 or v.shape[0] != B or v.shape[1] != H or v.shape[2] != Lk:
        raise ValueError(f"v: expected shape [B={B}, H={H}, Lk={Lk}, Dv], got {_shape(v)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} (the dtype of q), got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (the device of q), got {t.device}")
    if prev is not None:
        if not isinstance(prev, Tensor):
            raise TypeError(f"prev: expected a torch.Tensor or None, got {type(prev).__name__}")
        if _shape(prev) != (B, H, Lq, Lk):
            raise ValueError(f"prev: expected shape [{B}, {H}, {Lq}, {Lk}] ([B, H, Lq, Lk]), got {_shape(prev)}")
        if prev.dtype != q.dtype:
            raise TypeError(f"prev: expected dtype {q.dtype} (the dtype of q), got {prev.dtype}")
        if prev.device != q.device:
            raise ValueError(f"prev: expected device {q.device} (the device of q), got {prev.device}")
    if key_mask is not None:
        if not isinstance(key_mask, Tensor):
            raise TypeError(f"key_mask: expected a bool torch.Tensor or None, got {type(key_mask).__name__}")
        if key_mask.dtype != torch.bool:
            raise TypeError(f"key_mask: expected a bool tensor (True = key takes part), got {key_mask.dtype}")
        if _shape(key_mask) != (B, Lk):
            raise ValueError(f"key_mask: expected shape [B={B}, Lk={Lk}], got {_shape(key_mask)}")
        if key_mask.device != q.device:
            raise ValueError(f"key_mask: expected device {q.device} (the device of q), got {key_mask.device}")
    if mode == "gated":
        for name, t in (("gate_weight", gate_weight), ("gate_bias", gate_bias)):
            if t is None:
                raise ValueError(f"{name}: required for mode='gated' (a [H] tensor), got None")
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if _shape(t) != (H,):
                raise ValueError(f"{name}: expected shape [H={H}], got {_shape(t)}")
            if not t.is_floating_point():
                raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
            if t.device != q.device:
                raise ValueError(f"{name}: expected device {q.device} (the device of q), got {t.device}")
    if scale is None:
        return 1.0 / math.sqrt(D) if D > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale: expected a finite number or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale}")
    return float(scale)


#: c10's names of the dtypes, as the kernels print them in their dtype-support message
_C10_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
}
_KERNEL_DTYPE_MESSAGES: dict[str, str] = {
    "cpu": "q: the CPU kernel of gated_residual_attention supports float32, float64 and bfloat16, got ",
    "cuda": "q: the CUDA kernel of gated_residual_attention supports float16, bfloat16 and float32, got ",
}


def check_kernel_dtype(q: Tensor) -> None:
    """The device's kernel must support q's dtype (as the C++ ``prepare`` checks); no-op on meta."""
    device_type = q.device.type
    if device_type in _KERNEL_DTYPE_MESSAGES and q.dtype not in FUSED_DTYPES[device_type]:
        name = _C10_DTYPE_NAMES.get(q.dtype, str(q.dtype).removeprefix("torch."))
        raise TypeError(_KERNEL_DTYPE_MESSAGES[device_type] + name)


def check_grad_shape(grad: Tensor, name: str, expected: tuple[int, ...], q: Tensor) -> None:
    """An incoming gradient of the backward op must have the output's shape and q's device."""
    if tuple(grad.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {list(expected)}, got {list(grad.shape)}".replace("'", ""))
    if grad.device != q.device:
        raise ValueError(f"{name}: expected device {q.device} (the device of q), got {grad.device}")
