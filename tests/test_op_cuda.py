"""The CUDA kernels of gated_residual_attention on a GPU, against the float64 reference.

Without a GPU only the registration test runs; the kernels' logic is then still exercised by
tests/test_op_cuda_emulated.py (same source on a CPU emulator). Budget on a GPU: < 1 minute.
"""

from __future__ import annotations

import pytest
import torch
from op_cuda_helpers import Problem, assert_close, make_problem, reference

from mmfuse.ops import built_with_cuda, gated_residual_attention, gated_residual_attention_reference
from mmfuse.ops.attention import BACKWARD_OP_NAME, OP_NAME, fused_kernel_available



def needs_gpu(test):
    """Marks a test `cuda` and skips it without a GPU or without the compiled CUDA kernels."""
    for mark in (
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        pytest.mark.skipif(not built_with_cuda(), reason="extension built without its CUDA kernels"),
    ):
        test = mark(test)
    return test


DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MODES = ["none", "residual", "gated"]


def test_cuda_kernels_registered_for_both_ops():
    if not built_with_cuda():
        pytest.skip("extension built without its CUDA kernels")
    for name in (OP_NAME, BACKWARD_OP_NAME):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"), name
    assert fused_kernel_available("cuda", torch.bfloat16)
    assert not fused_kernel_available("cuda", torch.float64)


def fused_forward_backward(p: Problem):
    """Forward through the public API (impl='fused'), backward through autograd."""
    leaves = {}
    for name in ("q", "k", "v", "prev", "gate_weight", "gate_bias"):
        t = getattr(p, name)
        leaves[name] = None if t is None else t.detach().clone().requires_grad_()
    out, scores = gated_residual_attention(
        leaves["q"], leaves["k"], leaves["v"], leaves["prev"], p.key_mask, leaves["gate_weight"],
        leaves["gate_bias"], p.mode, p.scale, impl="fused",
    )
    torch.autograd.backward([out, scores], [p.grad_out, p.grad_scores])
    return out, scores, leaves


def check_fused(p: Problem, dtype: torch.dtype):
    out, scores, leaves = fused_forward_backward(p)
    ref_out, ref_scores, ref_grads = reference(p)
    assert out.dtype == dtype and scores.dtype == dtype
    assert out.is_contiguous() and scores.is_contiguous()
    assert_close(out, ref_out, dtype, "out")
    assert_close(scores, ref_scores, dtype, "scores")
    for name, leaf in leaves.items():
        if leaf is None:
            continue
        expected = ref_grads[name]
        if expected is None:  # e.g. prev in mode "none": no dependence
            assert leaf.grad is None or leaf.grad.abs().max() == 0, name
            continue
        assert leaf.grad is not None, name
        assert leaf.grad.dtype == leaf.dtype, name
        assert_close(leaf.grad, expected, dtype, f"grad_{name}")
    return out, scores, leaves


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference_with_prev_and_mask(mode, dtype):
    """Lq=37, Lk=70 (partial row blocks and key tiles); batch 1 has every key masked."""
    p = make_problem(mode=mode, dtype=dtype, device="cuda")
    out, _, leaves = check_fused(p, dtype)
    assert out[1].abs().max() == 0
    assert all(torch.isfinite(t.grad).all() for t in leaves.values() if t is not None and t.grad is not None)


@needs_gpu
@pytest.mark.parametrize("mode", MODES)
def test_without_prev_or_mask(mode):
    check_fused(make_problem(mode=mode, with_prev=False, with_mask=False, device="cuda"), torch.float32)


@needs_gpu
@pytest.mark.parametrize(
    "shape",
    [
        dict(Lq=64, Lk=48, D=128, Dv=128),
        dict(Lq=20, Lk=33, D=256, Dv=256, B=1),
        dict(Lq=50, Lk=129, D=72, Dv=40),  # Lq != Lk, Dv != D, scalar loads for D=72 in 16-bit
        dict(Lq=1, Lk=1, D=1, Dv=1),
    ],
    ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()),
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_shapes(shape, dtype):
    check_fused(make_problem(mode="gated", dtype=dtype, device="cuda", **shape), dtype)


@needs_gpu
@pytest.mark.parametrize("mode", ["residual", "gated"])
def test_long_key_rows_use_the_global_fallback(mode):
    """Score rows of 4100 keys exceed any GPU's shared memory per block: both kernels keep them
    in a float32 workspace instead."""
    p = make_problem(mode=mode, dtype=torch.float16, device="cuda", B=1, H=2, Lq=40, Lk=4100, D=32, Dv=32)
    check_fused(p, torch.float16)


@needs_gpu
def test_non_contiguous_inputs():
    p = make_problem(mode="gated", dtype=torch.bfloat16, device="cuda", Lq=24, Lk=40, D=32, Dv=32)
    p.q, p.k, p.v, p.prev = (t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (p.q, p.k, p.v, p.prev))
    assert not p.q.is_contiguous()
    check_fused(p, torch.bfloat16)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_extreme_scores(dtype):
    p = make_problem(mode="gated", dtype=dtype, device="cuda", Lq=16, Lk=30, D=4, Dv=8, magnitude=70.0)
    out, scores, _ = check_fused(p, dtype)
    assert scores.abs().max() > 1e3 and torch.isfinite(out).all()


@needs_gpu
def test_float32_gate_params_with_bfloat16_inputs():
    """What autocast produces: bf16 activations, float32 gate parameters (and their grads)."""
    p = make_problem(mode="gated", dtype=torch.bfloat16, gate_dtype=torch.float32, device="cuda")
    _, _, leaves = check_fused(p, torch.bfloat16)
    assert leaves["gate_weight"].grad.dtype == torch.float32


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_two_chained_layers(dtype):
    """scores of layer 1 is prev of layer 2: gradients reach layer 1 through both outputs."""
    g = torch.Generator().manual_seed(3)
    B, H, L, D = 2, 3, 45, 32

    def rnd(*s):
        return torch.randn(*s, generator=g).to(dtype).cuda()

    inputs = [rnd(B, H, L, D) for _ in range(6)]
    gates = [torch.randn(H, generator=g).to(dtype).cuda() for _ in range(2)]
    mask = (torch.rand(B, L, generator=g) > 0.2).cuda()
    go1, go2, gs2 = rnd(B, H, L, D), rnd(B, H, L, D), rnd(B, H, L, L)

    def run(fn, cast):
        leaves = [cast(t).requires_grad_() for t in inputs + gates]
        q1, k1, v1, q2, k2, v2, w, b = leaves
        out1, s1 = fn(q1, k1, v1, None, mask, w, b, "gated")
        out2, s2 = fn(q2, k2, v2, s1, mask, w, b, "gated")
        loss = (out1 * cast(go1)).sum() + (out2 * cast(go2)).sum() + (s2 * cast(gs2)).sum()
        loss.backward()
        return [t.grad for t in leaves]

    fused = run(lambda *a: gated_residual_attention(*a, impl="fused"), lambda t: t.detach().clone())
    ref = run(gated_residual_attention_reference, lambda t: t.detach().double())
    for i, (a, e) in enumerate(zip(fused, ref)):
        assert_close(a, e, dtype, f"grad of input {i}")


@needs_gpu
def test_runs_on_the_current_stream():
    p = make_problem(mode="gated", dtype=torch.float16, device="cuda")
    expected, _, _ = reference(p)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out, _ = gated_residual_attention(*p.args(), impl="fused")
    stream.synchronize()
    assert_close(out, expected, torch.float16, "out")


@needs_gpu
def test_opcheck_on_cuda():
    assert fused_kernel_available("cuda")  # registers the fake kernel and autograd formula
    p = make_problem(mode="gated", dtype=torch.float32, device="cuda", Lq=9, Lk=13, D=8, Dv=8)
    leaves = [t.detach().clone().requires_grad_() for t in (p.q, p.k, p.v, p.prev)]
    torch.library.opcheck(
        torch.ops.mmfuse.gated_residual_attention.default,
        (*leaves, p.key_mask, p.gate_weight.requires_grad_(), p.gate_bias.requires_grad_(), p.mode, p.scale),
    )


