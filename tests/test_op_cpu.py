"""The CPU kernels of gated_residual_attention (csrc/cpu/) against the eager reference.

Forward (out and scores) and backward (all six gradients) are compared with the float64
reference for every mode and dtype, on awkward shapes, non-contiguous inputs, masks with
fully masked rows and extreme scores; autograd of the registered op is checked with
gradcheck (also through two chained layers), hypothesis, opcheck and torch.compile.
Budget: < 1 minute on 2 cores.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cuda_helpers import Problem, make_problem, reference, rel_err

from mmfuse.ops import fused_kernel_available, gated_residual_attention, gated_residual_attention_reference
from mmfuse.ops.attention import BACKWARD_OP_NAME, OP_NAME
from mmfuse.ops.validation import FUSED_DTYPES

if not fused_kernel_available("cpu"):
    pytest.skip("the CPU kernels of mmfuse._C are not built", allow_module_level=True)

MODES = ["none", "residual", "gated"]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]
#: max |actual - expected| / max |expected| allowed against the float64 reference
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}
GRAD_NAMES = ("q", "k", "v", "prev", "gate_weight", "gate_bias")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    err = rel_err(actual, expected)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:.3g} ({dtype})"


def run_op(p: Problem):
    """Forward and backward straight through torch.ops.mmfuse (the CPU kernels)."""
    out, scores = torch.ops.mmfuse.gated_residual_attention(*p.args())
    grads = torch.ops.mmfuse.gated_residual_attention_backward(
        p.grad_out, p.grad_scores, p.q, p.k, p.v, p.prev, p.key_mask, p.gate_weight, p.gate_bias, scores, p.mode,
        p.scale,
    )
    return out, scores, grads


def check_against_reference(p: Problem, dtype: torch.dtype):
    out, scores, grads = run_op(p)
    ref_out, ref_scores, ref_grads = reference(p)
    assert out.dtype == dtype and scores.dtype == dtype
    assert out.is_contiguous() and scores.is_contiguous()
    assert_close(out, ref_out, dtype, "out")
    assert_close(scores, ref_scores, dtype, "scores")
    grad_q, grad_k, grad_v, grad_prev, grad_w, grad_b = grads
    for name, g in (("q", grad_q), ("k", grad_k), ("v", grad_v)):
        assert g.dtype == dtype and g.shape == getattr(p, name).shape, name
        assert_close(g, ref_grads[name], dtype, f"grad_{name}")
    if p.prev is None:
        assert grad_prev.numel() == 0
    else:
        expected = ref_grads["prev"] if ref_grads["prev"] is not None else torch.zeros_like(p.prev, dtype=torch.float64)
        assert grad_prev.shape == p.prev.shape and grad_prev.dtype == dtype
        assert_close(grad_prev, expected, dtype, "grad_prev")
    if p.mode == "gated" and p.prev is not None:
        assert grad_w.dtype == p.gate_weight.dtype and grad_b.dtype == p.gate_bias.dtype
        assert_close(grad_w, ref_grads["gate_weight"], dtype, "grad_gate_weight")
        assert_close(grad_b, ref_grads["gate_bias"], dtype, "grad_gate_bias")
    else:
        assert grad_w.numel() == 0 and grad_b.numel() == 0
    return out, scores, grads


def test_cpu_kernels_registered_and_dtypes_consistent():
    for name in (OP_NAME, BACKWARD_OP_NAME):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), name
    assert set(FUSED_DTYPES["cpu"]) == set(DTYPES)
    for dtype in DTYPES:
        assert fused_kernel_available("cpu", dtype)
    assert not fused_kernel_available("cpu", torch.float16)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference_with_prev_and_mask(mode, dtype):
    """Lq=37, Lk=70 (partial row and key blocks, edge tiles); batch 1 has every key masked:
    zero output rows, finite gradients, and still a gradient through `scores`."""
    p = make_problem(mode=mode, dtype=dtype)
    out, _, grads = check_against_reference(p, dtype)
    assert out[1].abs().max() == 0
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mode", MODES)
def test_without_prev_or_mask(mode):
    for dtype in (torch.float64, torch.float32):
        check_against_reference(make_problem(mode=mode, dtype=dtype, with_prev=False, with_mask=False), dtype)


@pytest.mark.parametrize(
    "shape",
    [
        dict(Lq=50, Lk=129, D=72, Dv=40),  # Lq != Lk, Dv != D, no dimension a tile multiple
        dict(Lq=64, Lk=32, D=16, Dv=64, B=1, H=3),  # only full tiles
        dict(Lq=1, Lk=1, D=1, Dv=1),
        dict(Lq=5, Lk=3, D=0, Dv=2),  # D = 0: every raw score is 0
    ],
    ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()),
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_shapes(shape, dtype):
    check_against_reference(make_problem(mode="gated", dtype=dtype, **shape), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_no_keys_gives_zero_output_and_gradients(mode):
    p = make_problem(mode=mode, dtype=torch.float64, Lq=4, Lk=0, D=3, Dv=2)
    out, scores, grads = run_op(p)
    assert out.shape == (2, 2, 4, 2) and out.abs().max() == 0 and scores.shape == (2, 2, 4, 0)
    assert grads[0].abs().max() == 0
    if mode == "gated":
        assert grads[4].abs().max() == 0 and grads[4].shape == (2,)
    # the reference agrees (its cosine once failed on the empty key dimension)
    ref_out, ref_scores, ref_grads = reference(p)
    assert torch.equal(ref_out, out) and ref_scores.shape == scores.shape
    assert ref_grads["q"] is None or ref_grads["q"].abs().max() == 0


@pytest.mark.parametrize("q_mag,k_mag,scale", [(1e20, 1e-20, 1e20), (1e-20, 1e20, 1e-20)], ids=["big", "tiny"])
def test_scale_is_applied_to_the_product(q_mag, k_mag, scale):
    # scale * q alone overflows (or lands in the denormals) while s = scale * (q . K^T) is an
    # ordinary float32 number: the kernel must scale the finished product, as the contract says
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, 4, generator=g) * q_mag
    k = torch.randn(1, 2, 6, 4, generator=g) * k_mag
    v = torch.randn(1, 2, 6, 3, generator=g)
    out, scores = torch.ops.mmfuse.gated_residual_attention(q, k, v, None, None, None, None, "none", scale)
    ref_out, ref_scores = gated_residual_attention_reference(q.double(), k.double(), v.double(), mode="none",
                                                             scale=scale)
    assert_close(scores, ref_scores, torch.float32, "scores")
    assert_close(out, ref_out, torch.float32, "out")


def test_non_contiguous_inputs():
    p = make_problem(mode="gated", dtype=torch.float32, Lq=24, Lk=40, D=32, Dv=32)
    p.q, p.k, p.v, p.prev, p.grad_out, p.grad_scores = (
        t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (p.q, p.k, p.v, p.prev, p.grad_out, p.grad_scores)
    )
    p.key_mask = torch.cat([p.key_mask, ~p.key_mask], dim=1)[:, ::2]
    assert not (p.q.is_contiguous() or p.prev.is_contiguous() or p.key_mask.is_contiguous())
    check_against_reference(p, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_extreme_scores(mode, dtype):
    """q.k of order ±1e4 before scaling: the softmax is nearly one-hot, nothing overflows."""
    p = make_problem(mode=mode, dtype=dtype, Lq=16, Lk=30, D=4, Dv=8, magnitude=70.0)
    raw = torch.einsum("bhid,bhjd->bhij", p.q.double(), p.k.double())
    assert raw.abs().max() > 1e4
    out, _, grads = check_against_reference(p, dtype)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)


def test_bfloat16_inputs_with_float32_gate_parameters():
    """What autocast produces: bf16 activations, float32 gate parameters (and their grads)."""
    p = make_problem(mode="gated", dtype=torch.bfloat16, gate_dtype=torch.float32)
    _, _, grads = check_against_reference(p, torch.bfloat16)
    assert grads[4].dtype == torch.float32 and grads[5].dtype == torch.float32


@pytest.mark.parametrize("batch", [2, 1], ids=["per-head-both", "per-head-vs-two-pass"])
def test_backward_is_deterministic_across_thread_counts(batch):
    # batch 1 (3 heads): one thread runs the per-head schedule, two threads the two-pass one
    # (fewer than 2 heads per thread); the bits must not depend on which ran
    p = make_problem(mode="gated", dtype=torch.float32, B=batch, H=3, Lq=70, Lk=90, D=24, Dv=16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = run_op(p)
        torch.set_num_threads(max(2, threads))
        parallel = run_op(p)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip((*serial[:2], *serial[2]), (*parallel[:2], *parallel[2])):
        assert torch.equal(a, b)


def _leaves(p: Problem, dtype=torch.float64):
    return [
        None if getattr(p, n) is None else getattr(p, n).detach().to(dtype).requires_grad_()
        for n in GRAD_NAMES
    ]


@pytest.mark.parametrize("with_prev", [True, False], ids=["prev", "no-prev"])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_through_out_and_scores(mode, with_prev):
    p = make_problem(mode=mode, dtype=torch.float64, B=2, H=2, Lq=4, Lk=6, D=4, Dv=3, with_prev=with_prev, seed=1)
    q, k, v, prev, w, b = _leaves(p)
    inputs = [t for t in (q, k, v, prev, w, b) if t is not None]

    def fn(*args):
        it = iter(args)
        qq, kk, vv = next(it), next(it), next(it)
        pp = next(it) if prev is not None else None
        ww, bb = (next(it), next(it)) if w is not None else (None, None)
        return gated_residual_attention(qq, kk, vv, pp, p.key_mask, ww, bb, mode, impl="fused")

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_two_chained_layers():
    """scores of layer 1 is prev of layer 2: gradients reach layer 1 through both outputs."""
    g = torch.Generator().manual_seed(2)
    B, H, L, D = 2, 2, 4, 3
    leaves = [torch.randn(B, H, L, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(6)]
    leaves += [torch.randn(H, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    mask = torch.tensor([[True, True, False, True], [False, False, False, False]])  # batch 1: no keys

    def two_layers(q1, k1, v1, q2, k2, v2, w1, b1, w2, b2):
        out1, s1 = gated_residual_attention(q1, k1, v1, None, mask, w1, b1, "gated", impl="fused")
        out2, s2 = gated_residual_attention(q2, k2, v2, s1, mask, w2, b2, "gated", impl="fused")
        return out1, out2, s2

    assert torch.autograd.gradcheck(two_layers, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 3),
    H=st.integers(1, 3),
    Lq=st.integers(1, 40),
    Lk=st.integers(1, 40),
    D=st.integers(1, 20),
    Dv=st.integers(1, 20),
    mode=st.sampled_from(MODES),
    with_prev=st.booleans(),
    mask_kind=st.sampled_from(["none", "random", "first-batch-empty"]),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(B, H, Lq, Lk, D, Dv, mode, with_prev, mask_kind, seed):
    p = make_problem(
        B=B, H=H, Lq=Lq, Lk=Lk, D=D, Dv=Dv, mode=mode, dtype=torch.float64, with_prev=with_prev,
        with_mask=mask_kind != "none", masked_batch=0 if mask_kind == "first-batch-empty" else None, seed=seed,
    )
    check_against_reference(p, torch.float64)


def test_opcheck():
    for mode, with_prev in (("gated", True), ("none", False)):
        p = make_problem(mode=mode, dtype=torch.float32, Lq=9, Lk=13, D=8, Dv=6, with_prev=with_prev)
        leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (p.q, p.k, p.v, p.prev)]
        gates = [None if t is None else t.requires_grad_() for t in (p.gate_weight, p.gate_bias)]
        torch.library.opcheck(
            torch.ops.mmfuse.gated_residual_attention.default, (*leaves, p.key_mask, *gates, p.mode, p.scale)
        )


class _TwoLayerAttention(torch.nn.Module):
    def __init__(self, heads: int):
        super().__init__()
        self.gate_weight = torch.nn.Parameter(torch.linspace(-1.0, 1.0, heads))
        self.gate_bias = torch.nn.Parameter(torch.zeros(heads))

    def forward(self, q, k, v, mask):
        out1, s1 = gated_residual_attention(q, k, v, None, mask, self.gate_weight, self.gate_bias, impl="fused")
        out2, s2 = gated_residual_attention(out1, k, v, s1, mask, self.gate_weight, self.gate_bias, impl="fused")
        return out2, s2


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    module = _TwoLayerAttention(heads=2)
    q, k, v = (torch.randn(2, 2, 7, 8, requires_grad=True) for _ in range(3))
    mask = torch.rand(2, 7) > 0.3
    mask[:, 0] = True
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (module, compiled):
        for t in (q, k, v, *module.parameters()):
            t.grad = None
        out, scores = fn(q, k, v, mask)
        (out.square().sum() + scores.sum()).backward()
        results.append([out, scores] + [t.grad.clone() for t in (q, k, v, *module.parameters())])
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager)


def test_mode_none_equals_sdpa():
    p = make_problem(mode="none", dtype=torch.float64, with_prev=False, masked_batch=None, seed=5)
    p.key_mask[:, 0] = True  # SDPA returns NaN for rows without keys; the op's zero rows are tested above
    out, _ = gated_residual_attention(p.q, p.k, p.v, None, p.key_mask, mode="none", impl="fused")
    expected = F.scaled_dot_product_attention(p.q, p.k, p.v, attn_mask=p.key_mask[:, None, None, :])
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def _bad_inputs():
    B, H, L, D = 2, 3, 5, 4
    q = torch.randn(B, H, L, D)
    k, v = torch.randn(B, H, L, D), torch.randn(B, H, L, D)
    prev, mask = torch.randn(B, H, L, L), torch.ones(B, L, dtype=torch.bool)
    w, b = torch.randn(H), torch.randn(H)
    ok = dict(q=q, k=k, v=v, prev=prev, key_mask=mask, gate_weight=w, gate_bias=b, mode="gated", scale=None)
    cases = {
        "q rank": (dict(q=q[0]), ValueError, r"q: expected a 4-D tensor \[B, H, Lq, D\], got shape \(3, 5, 4\)"),
        "k heads": (dict(k=k[:, :2]), ValueError, r"k: expected shape \[B=2, H=3, Lk, D=4\] to match q"),
        "v keys": (dict(v=v[:, :, :4]), ValueError, r"v: expected shape \[B=2, H=3, Lk=5, Dv\]"),
        "prev shape": (dict(prev=prev[..., :4]), ValueError, r"prev: expected shape \[2, 3, 5, 5\]"),
        "prev dtype": (dict(prev=prev.double()), TypeError, r"prev: expected dtype torch.float32"),
        "k dtype": (dict(k=k.double()), TypeError, r"k: expected dtype torch.float32 \(the dtype of q\)"),
        "mask dtype": (dict(key_mask=mask.float()), TypeError, r"key_mask: expected a bool tensor"),
        "mask shape": (dict(key_mask=mask[:, :3]), ValueError, r"key_mask: expected shape \[B=2, Lk=5\]"),
        "gate missing": (dict(gate_weight=None), ValueError, r"gate_weight: required for mode='gated'"),
        "gate shape": (dict(gate_bias=b[:2]), ValueError, r"gate_bias: expected shape \[H=3\]"),
        "mode": (dict(mode="sum"), ValueError, r"mode: expected one of 'none', 'residual', 'gated', got 'sum'"),
        "scale": (dict(scale=math.inf), ValueError, r"scale: expected a finite number, got inf"),
        "device": (dict(key_mask=mask.to("meta")), ValueError, r"key_mask: expected device cpu"),
    }
    return ok, cases


@pytest.mark.parametrize("case", list(_bad_inputs()[1]))
def test_bad_inputs_raise_clear_errors(case):
    ok, cases = _bad_inputs()
    change, exc, message = cases[case]
    with pytest.raises(exc, match=message):
        gated_residual_attention(**{**ok, **change}, impl="fused")


def test_kernel_checks_its_arguments_too():
    """Called directly (not through the Python API), the C++ entry points validate as well."""
    ok, cases = _bad_inputs()
    args = dict(ok, scale=0.5)
    order = ("q", "k", "v", "prev", "key_mask", "gate_weight", "gate_bias", "mode", "scale")
    for case in ("k heads", "prev shape", "mask dtype", "gate missing", "mode"):
        change, exc, message = cases[case]  # the kernels raise the API's exception types too
        with pytest.raises(exc, match=message):
            torch.ops.mmfuse.gated_residual_attention(*[{**args, **change}[n] for n in order])
    half = {n: (t.half() if n in ("q", "k", "v", "prev") else t) for n, t in args.items()}
    with pytest.raises(TypeError, match="CPU kernel of gated_residual_attention supports float32, float64"):
        torch.ops.mmfuse.gated_residual_attention(*[half[n] for n in order])
    with pytest.raises(RuntimeError, match="impl='fused': no compiled mmfuse kernel for device 'cpu'"):
        gated_residual_attention(**{**ok, **{n: half[n] for n in ("q", "k", "v", "prev")}}, impl="fused")
