"""Non-finite values in gated_residual_attention: one rule (docs/op.md, "Non-finite values"),
the same in the eager reference and the CPU kernel (the CUDA kernels: tests/test_op_cuda_emulated.py
and tests/test_op_cuda.py share the cases through op_cuda_helpers).

* NaN / ±inf at a valid position propagate to that row's ``out`` and ``scores`` (IEEE);
* values at masked keys never change the valid outputs (selected with ``where``);
* the float32 cosine does not overflow for |s|, |p| up to 1e18.
"""

from __future__ import annotations

import pytest
import torch
from op_cuda_helpers import (
    NONFINITE_CASES,
    assert_close_nonfinite,
    check_valid_outputs_equal,
    make_problem,
    nonfinite_problem,
    reference,
)

from mmfuse.ops import fused_kernel_available, gated_residual_attention_reference

MODES = ["none", "residual", "gated"]
#: relative tolerance against the float64 reference
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
needs_cpu_kernel = pytest.mark.skipif(not fused_kernel_available("cpu"), reason="CPU kernels not built")


def run_kernel(p):
    out, scores = torch.ops.mmfuse.gated_residual_attention(*p.args())
    grads = torch.ops.mmfuse.gated_residual_attention_backward(
        p.grad_out, p.grad_scores, p.q, p.k, p.v, p.prev, p.key_mask, p.gate_weight, p.gate_bias, scores, p.mode,
        p.scale,
    )
    return out, scores, grads


def check_case(run, case: str, mode: str, dtype: torch.dtype, tol: float) -> None:
    """Forward and backward of ``run`` against the float64 reference on one planted case."""
    p, clean = nonfinite_problem(case, mode, dtype)
    out, scores, grads = run(p)
    ref_out, ref_scores, ref_grads = reference(p)
    assert_close_nonfinite(out, ref_out, dtype, "out", tol)
    assert_close_nonfinite(scores, ref_scores, dtype, "scores", tol)
    names = ("q", "k", "v", "prev", "gate_weight", "gate_bias")
    for name, g in zip(names, grads):
        if ref_grads[name] is not None:
            assert_close_nonfinite(g, ref_grads[name], dtype, f"grad_{name}", tol)
    if case == "nan_q_row":  # the row itself, and nothing else, is NaN
        assert out[0, 0, 3].isnan().all() and scores[0, 0, 3].isnan().all()
        assert out[0, 0, :3].isfinite().all() and out[0, 1].isfinite().all()
    if case == "inf_prev_valid" and mode != "none":
        assert out[0, 1, 2].isnan().all() and out[0, 1, 3:].isfinite().all()
    if clean is not None:
        clean_out, clean_scores, clean_grads = run(clean)
        check_valid_outputs_equal(out, scores, clean_out, clean_scores, p.key_mask)
        # the gradient of v, and of prev at valid keys outside gated mode, does not see the masked
        # values either (the others depend, through `scores` at masked positions, on s_j = q.k_j
        # there, whose gradient is genuinely non-finite: d n_j / d g = s_j / 2, d s_j / d q = k_j)
        for name, g, cg in zip(names, grads, clean_grads):
            if name not in ("v", "prev") or g.numel() == 0 or (name == "prev" and mode == "gated"):
                continue
            if name == "prev":
                valid = p.key_mask[:, None, None, :].expand_as(g)
                g, cg = g[valid], cg[valid]
            assert torch.isfinite(g).all() and torch.allclose(g, cg), name
    if case.startswith("huge"):
        assert torch.isfinite(out).all() and torch.isfinite(scores).all()


# ---------------------------------------------------------------------------------------------
# The reference itself


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_reference_masked_values_never_reach_valid_outputs(mode, dtype):
    p, clean = nonfinite_problem("masked_garbage", mode, dtype)
    out, scores = gated_residual_attention_reference(*p.args())
    clean_out, clean_scores = gated_residual_attention_reference(*clean.args())
    check_valid_outputs_equal(out, scores, clean_out, clean_scores, p.key_mask)
    assert out[1].abs().max() == 0  # batch 1: every key masked, zero rows


@pytest.mark.parametrize("magnitude", [1e10, 1e12, 1e18])
def test_reference_float32_cosine_does_not_overflow(magnitude):
    """s = c * p exactly (c > 0) at |values| ~ magnitude: the cosine is 1, so g = sigmoid(w + b);
    the float32 reference must agree with float64 (before, |s|^2 |p|^2 overflowed to c = 0)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 4, 1, generator=g, dtype=torch.float64).abs() + 0.5
    k = torch.randn(1, 1, 6, 1, generator=g, dtype=torch.float64) * magnitude
    prev = 3.0 * q @ k.transpose(-1, -2)  # proportional to s row by row: cosine 1
    w, b = torch.tensor([2.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    v = torch.randn(1, 1, 6, 2, generator=g, dtype=torch.float64)
    expected = gated_residual_attention_reference(q, k, v, prev, None, w, b, "gated", 1.0)[1]
    gate = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))  # w * 1 + b = 1
    torch.testing.assert_close(expected, (gate * q @ k.transpose(-1, -2) + prev) / 2, rtol=1e-12, atol=0)
    got = gated_residual_attention_reference(*(t.float() for t in (q, k, v, prev)), None, w.float(), b.float(),
                                             "gated", 1.0)[1]
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)


def test_reference_all_masked_rows_stay_zero_with_nan_inputs():
    p = make_problem(mode="gated", dtype=torch.float64, Lq=3, Lk=4, D=2, Dv=2)
    p.q[1] = float("nan")  # batch 1 has every key masked
    out, scores = gated_residual_attention_reference(*p.args())
    assert out[1].abs().max() == 0 and scores[1].isnan().all()


# ---------------------------------------------------------------------------------------------
# The CPU kernel against the float64 reference


@needs_cpu_kernel
@pytest.mark.parametrize("case", NONFINITE_CASES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cpu_kernel_nonfinite(case, mode, dtype):
    check_case(run_kernel, case, mode, dtype, TOL[dtype])
