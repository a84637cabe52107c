"""Shared pieces of the CUDA kernel tests (tests/test_op_cuda.py on a GPU,
tests/test_op_cuda_emulated.py through the CPU emulator): random problems, the float64
reference forward/backward, and tolerance checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from mmfuse.ops.reference import gated_residual_attention_reference

#: max |actual - expected| / max |expected| allowed per dtype (forward and gradients)
REL_TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


@dataclass
class Problem:
    """Inputs of one op call, plus upstream gradients for the backward."""

    q: Tensor
    k: Tensor
    v: Tensor
    prev: Optional[Tensor]
    key_mask: Optional[Tensor]
    gate_weight: Optional[Tensor]
    gate_bias: Optional[Tensor]
    mode: str
    scale: float
    grad_out: Tensor = field(repr=False, default=None)
    grad_scores: Tensor = field(repr=False, default=None)

    def args(self) -> tuple:
        return (self.q, self.k, self.v, self.prev, self.key_mask, self.gate_weight, self.gate_bias, self.mode, self.scale)


def make_problem(
    B: int = 2,
    H: int = 2,
    Lq: int = 37,
    Lk: int = 70,
    D: int = 20,
    Dv: int = 24,
    *,
    mode: str = "gated",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    with_prev: bool = True,
    with_mask: bool = True,
    masked_batch: Optional[int] = 1,
    gate_dtype: Optional[torch.dtype] = None,
    magnitude: float = 1.0,
    seed: int = 0,
) -> Problem:
    """A random problem; with a mask, batch ``masked_batch`` has every key masked."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, dt: torch.dtype = dtype) -> Tensor:
        return (torch.randn(*shape, generator=g) * magnitude).to(dt).to(device)

    mask = None
    if with_mask:
        mask = torch.rand(B, Lk, generator=g) > 0.3
        if masked_batch is not None and masked_batch < B:
            mask[masked_batch] = False
        mask = mask.to(device)
    gate_dtype = gate_dtype or dtype
    p = Problem(
        q=rnd(B, H, Lq, D),
        k=rnd(B, H, Lk, D),
        v=(torch.randn(B, H, Lk, Dv, generator=g)).to(dtype).to(device),
        prev=(torch.randn(B, H, Lq, Lk, generator=g)).to(dtype).to(device) if with_prev else None,
        key_mask=mask,
        gate_weight=torch.randn(H, generator=g).to(gate_dtype).to(device) if mode == "gated" else None,
        gate_bias=torch.randn(H, generator=g).to(gate_dtype).to(device) if mode == "gated" else None,
        mode=mode,
        scale=1.0 / math.sqrt(D) if D > 0 else 1.0,
    )
    p.grad_out = torch.randn(B, H, Lq, Dv, generator=g).to(dtype).to(device)
    p.grad_scores = torch.randn(B, H, Lq, Lk, generator=g).to(dtype).to(device)
    return p


def reference(p: Problem) -> tuple[Tensor, Tensor, dict[str, Optional[Tensor]]]:
    """float64 forward ``(out, scores)`` and the gradients of
    ``<out, grad_out> + <scores, grad_scores>`` w.r.t. q, k, v, prev, gate_weight, gate_bias."""
    names = ("q", "k", "v", "prev", "gate_weight", "gate_bias")
    leaves = {}
    for name in names:
        t = getattr(p, name)
        leaves[name] = None if t is None else t.detach().double().requires_grad_()
    out, scores = gated_residual_attention_reference(
        leaves["q"], leaves["k"], leaves["v"], leaves["prev"], p.key_mask, leaves["gate_weight"], leaves["gate_bias"],
        p.mode, p.scale,
    )
    loss = (out * p.grad_out.double()).sum() + (scores * p.grad_scores.double()).sum()
    used = [t for t in leaves.values() if t is not None]
    grads = torch.autograd.grad(loss, used, allow_unused=True)
    by_leaf = dict(zip([n for n in names if leaves[n] is not None], grads))
    return out.detach(), scores.detach(), {n: by_leaf.get(n) for n in names}


def rel_err(actual: Tensor, expected: Tensor) -> float:
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.numel() == 0:
        return 0.0
    assert torch.isfinite(actual).all(), "non-finite values"
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-6)).item()


def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype, what: str) -> None:
    err = rel_err(actual, expected)
    assert err <= REL_TOL[dtype], f"{what}: relative error {err:.3g} > {REL_TOL[dtype]:.3g} ({dtype})"


def check_backward_result(
    p: Problem, grads: tuple[Tensor, ...], ref_grads: dict[str, Optional[Tensor]], dtype: torch.dtype
) -> None:
    """Compare the op's 6 backward outputs with the reference gradients and the contract's
    conventions for absent inputs (empty grad_prev, empty gate grads)."""
    grad_q, grad_k, grad_v, grad_prev, grad_w, grad_b = grads
    for name, g in (("q", grad_q), ("k", grad_k), ("v", grad_v)):
        assert g.dtype == p.q.dtype, name
        assert_close(g, ref_grads[name], dtype, f"grad_{name}")
    if p.prev is None:
        assert grad_prev.numel() == 0
    else:
        assert grad_prev.shape == p.prev.shape and grad_prev.dtype == p.q.dtype
        expected = ref_grads["prev"] if ref_grads["prev"] is not None else torch.zeros_like(p.prev, dtype=torch.float64)
        assert_close(grad_prev, expected, dtype, "grad_prev")
    if p.mode == "gated" and p.prev is not None:
        assert grad_w.dtype == p.gate_weight.dtype and grad_b.dtype == p.gate_bias.dtype
        assert_close(grad_w, ref_grads["gate_weight"], dtype, "grad_gate_weight")
        assert_close(grad_b, ref_grads["gate_bias"], dtype, "grad_gate_bias")
    else:
        assert grad_w.numel() == 0 and grad_b.numel() == 0


# --------------------------------------------------------------------------------------------
# Non-finite values (docs/op.md, "Non-finite values"): shared by the CPU kernel and emulator tests

#: name -> what is planted; see nonfinite_problem
NONFINITE_CASES = ("nan_q_row", "inf_prev_valid", "nan_k_valid", "masked_garbage", "huge_1e12", "huge_1e18")


def nonfinite_problem(case: str, mode: str, dtype: torch.dtype) -> tuple[Problem, Optional[Problem]]:
    """A problem with non-finite or huge values planted, and (for ``masked_garbage``) the same
    problem with finite values at the masked keys, whose valid outputs must be identical.

    Batch 0 has a random mask with valid and masked keys, batch 1 every key masked.
    """
    if case.startswith("huge"):
        magnitude = 1e12 if case == "huge_1e12" else 1e18
        p = make_problem(mode=mode, dtype=dtype, Lq=9, Lk=21, D=8, Dv=8, seed=3)
        # |s| ~ magnitude: q and k of sqrt(magnitude), and prev of magnitude
        root = magnitude**0.5
        p.q, p.k = (p.q.double() * root).to(dtype), (p.k.double() * root).to(dtype)
        if p.prev is not None:
            p.prev = (p.prev.double() * magnitude).to(dtype)
        return p, None
    p = make_problem(mode=mode, dtype=dtype, Lq=9, Lk=21, D=8, Dv=8, seed=3)
    mask = p.key_mask
    valid_j = int(mask[0].nonzero()[0])
    masked_j = [int(j) for j in (~mask[0]).nonzero().flatten()]
    assert masked_j, "the seed must give batch 0 masked keys"
    if case == "nan_q_row":
        p.q[0, 0, 3, 1] = float("nan")
    elif case == "inf_prev_valid":
        p.prev[0, 1, 2, valid_j] = float("inf")
    elif case == "nan_k_valid":
        p.k[0, 1, valid_j, 2] = float("nan")
    elif case == "masked_garbage":
        clean = make_problem(mode=mode, dtype=dtype, Lq=9, Lk=21, D=8, Dv=8, seed=3)
        for i, j in enumerate(masked_j):
            bad = (float("nan"), float("inf"), -float("inf"))[i % 3]
            p.k[0, :, j, i % 8] = bad
            p.v[0, :, j, (i + 1) % 8] = bad
            p.prev[0, :, :, j] = bad
            p.k[1, :, j % 21, 0] = bad  # batch 1: every key masked
            p.v[1, :, j % 21, 0] = bad
            p.prev[1, :, :, j % 21] = bad
        return p, clean
    else:
        raise ValueError(case)
    return p, None


def assert_close_nonfinite(actual: Tensor, expected: Tensor, dtype: torch.dtype, what: str,
                           tol: Optional[float] = None) -> None:
    """Same NaN and ±inf positions, and the finite values within the dtype's tolerance."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    nan_a, nan_e = actual.isnan(), expected.isnan()
    assert torch.equal(nan_a, nan_e), f"{what}: NaN at {nan_a.sum()} positions, the reference at {nan_e.sum()}"
    inf_a, inf_e = actual.isinf(), expected.isinf()
    assert torch.equal(inf_a, inf_e) and torch.equal(actual[inf_a], expected[inf_e]), f"{what}: inf positions differ"
    finite = torch.isfinite(expected)
    if finite.any():
        err = rel_err(actual[finite], expected[finite])
        limit = REL_TOL.get(dtype, 1e-12) if tol is None else tol
        assert err <= limit, f"{what}: relative error {err:.3g} > {limit:.3g} ({dtype})"


def check_valid_outputs_equal(out: Tensor, scores: Tensor, clean_out: Tensor, clean_scores: Tensor,
                              key_mask: Tensor) -> None:
    """Values at masked keys must not change ``out`` or ``scores`` at valid keys (bitwise)."""
    assert torch.isfinite(out).all(), "out: non-finite values from masked keys"
    assert torch.equal(out, clean_out), "out: changed by values at masked keys"
    valid = key_mask[:, None, None, :].expand_as(scores)
    assert torch.equal(scores[valid], clean_scores[valid]), "scores: changed at valid keys by values at masked keys"
