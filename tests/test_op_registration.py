"""``torch.ops.mmfuse.gated_residual_attention`` as a first-class PyTorch op.

* Complete at import: in a fresh interpreter, after only ``import mmfuse`` (or only
  ``import mmfuse.ops``), the raw op has autograd, meta tensors work, ``opcheck`` passes and a
  cold ``torch.compile(fullgraph=True)`` (aot_eager and inductor) of the op and of a module
  runs. Subprocesses, so that nothing this test session imported or called primes it.
* The fake implementation validates exactly as the C++ kernels: same exception type and
  message eagerly, on meta tensors, in fake-tensor mode and under ``torch.compile``.
* Double backward and forward-mode AD (``torch.func.jvp``, ``torch.autograd.forward_ad``)
  match the eager reference instead of silently giving zeros.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import subprocess_env

from mmfuse.ops import extension_available, gated_residual_attention, gated_residual_attention_reference

if not extension_available():
    pytest.skip("the mmfuse extension (torch.ops.mmfuse) is not built", allow_module_level=True)

OP = torch.ops.mmfuse.gated_residual_attention.default
BACKWARD_OP = torch.ops.mmfuse.gated_residual_attention_backward.default

_FRESH_CHECKS = """
import json, math, sys, warnings
import torch
{import_line}
from torch._subclasses.fake_tensor import FakeTensorMode

op = torch.ops.mmfuse.gated_residual_attention
report = {{"schema": str(op.default._schema)}}
g = torch.Generator().manual_seed(0)
def rnd(*shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)
q, k, v, prev = rnd(2, 2, 5, 4), rnd(2, 2, 6, 4), rnd(2, 2, 6, 3), rnd(2, 2, 5, 6)
w, b = rnd(2), rnd(2)
mask = torch.rand(2, 6, generator=g) > 0.3
mask[:, 0] = True
leaves = [t.clone().requires_grad_() for t in (q, k, v, prev, w, b)]

# autograd of the raw op, straight after import (scale defaults to 1/sqrt(D))
with warnings.catch_warnings():
    warnings.simplefilter("error")  # PyTorch's "no autograd kernel" warning must not appear
    out, scores = op(leaves[0], leaves[1], leaves[2], leaves[3], mask, leaves[4], leaves[5])
    (out.square().sum() + (scores * scores.detach()).sum()).backward()
ref_leaves = [t.clone().requires_grad_() for t in (q, k, v, prev, w, b)]
ref_out, ref_scores = mmfuse.ops.gated_residual_attention_reference(
    ref_leaves[0], ref_leaves[1], ref_leaves[2], ref_leaves[3], mask, ref_leaves[4], ref_leaves[5], "gated",
    1 / math.sqrt(4))
(ref_out.square().sum() + (ref_scores * ref_scores.detach()).sum()).backward()
report["grads_set"] = all(t.grad is not None for t in leaves)
report["forward_err"] = max((out - ref_out).abs().max().item(), (scores - ref_scores).abs().max().item())
report["grad_err"] = max((a.grad - r.grad).abs().max().item() for a, r in zip(leaves, ref_leaves))

# meta tensors and fake-tensor mode
meta_out, meta_scores = op(*(t.to("meta") for t in (q, k, v, prev, mask, w, b)))
report["meta"] = [list(meta_out.shape), list(meta_scores.shape), str(meta_out.device)]
with FakeTensorMode() as mode:
    fake = [mode.from_tensor(t) for t in (q, k, v, prev, mask, w, b)]
    fake_out, _ = op(*fake)
report["fake"] = list(fake_out.shape)

# opcheck of both modes with and without the optional inputs
f32 = [t.float() for t in (q, k, v, prev, w, b)]
results = []
for args in ((f32[0].requires_grad_(), f32[1], f32[2], f32[3], mask, f32[4], f32[5], "gated", None),
             (f32[0], f32[1], f32[2], None, None, None, None, "none", 0.3)):
    results.append(torch.library.opcheck(op.default, args))
report["opcheck"] = sorted({{v for r in results for v in r.values()}})

if {compile}:
    class TwoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_weight = torch.nn.Parameter(torch.tensor([0.5, -1.0]))
            self.gate_bias = torch.nn.Parameter(torch.tensor([0.1, 0.2]))
        def forward(self, q, k, v, mask):
            o1, s1 = mmfuse.ops.gated_residual_attention(q, k, v, None, mask, self.gate_weight, self.gate_bias)
            return mmfuse.ops.gated_residual_attention(o1, k, v, s1, mask, self.gate_weight, self.gate_bias)

    def run(fn, *args):
        params = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        o, s = fn(*args)
        grads = torch.autograd.grad(o.square().sum() + s.sum(), params)
        return [o, s, *grads]

    def raw(q, k, v, prev, mask, w, b):
        return op(q, k, v, prev, mask, w, b)

    module = TwoLayers()
    x = [t.float().requires_grad_() for t in (q, k, k)]
    raw_args = [t.requires_grad_() for t in (f32[0].detach(), f32[1], f32[2])] + [f32[3], mask, f32[4], f32[5]]
    errs = {{}}
    for backend in ("aot_eager", "inductor"):
        for name, fn, args in (("op", raw, raw_args), ("module", module, (*x, mask))):
            compiled = torch.compile(fn, fullgraph=True, backend=backend)
            got, want = run(compiled, *args), run(fn, *args)
            errs[f"{{backend}}-{{name}}"] = max((a - e).abs().max().item() for a, e in zip(got, want))
    report["compile_err"] = errs
print("REPORT " + json.dumps(report))
"""


def _run_fresh(import_line: str, compile: bool) -> dict:
    code = textwrap.dedent(_FRESH_CHECKS).format(import_line=import_line, compile=compile)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def _check_report(report: dict) -> None:
    assert "float? scale=None" in report["schema"] and 'str mode="gated"' in report["schema"], report["schema"]
    assert report["grads_set"]
    assert report["forward_err"] < 1e-12 and report["grad_err"] < 1e-10, report
    assert report["meta"] == [[2, 2, 5, 3], [2, 2, 5, 6], "meta"]
    assert report["fake"] == [2, 2, 5, 3]
    assert report["opcheck"] == ["SUCCESS"], report["opcheck"]


@pytest.mark.slow
def test_import_mmfuse_completes_the_op_and_compiles_cold():
    """Only ``import mmfuse``: autograd, meta, opcheck, and cold torch.compile (aot_eager and
    inductor, fullgraph) of the raw op and of a two-layer module, forward and backward."""
    report = _run_fresh("import mmfuse", compile=True)
    _check_report(report)
    assert set(report["compile_err"]) == {"aot_eager-op", "aot_eager-module", "inductor-op", "inductor-module"}
    for name, err in report["compile_err"].items():
        assert err < 1e-4, (name, err)


def test_import_mmfuse_ops_completes_the_op():
    _check_report(_run_fresh("import mmfuse.ops", compile=False))


# -- the fake implementation validates as the kernels do ------------------------------------------


def _bad_calls() -> dict[str, tuple]:
    """Arguments of the raw op that the CPU kernel rejects, one flaw each."""
    B, H, L, D = 2, 3, 5, 4
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, generator=g) for _ in range(3))
    prev, mask = torch.randn(B, H, L, L, generator=g), torch.ones(B, L, dtype=torch.bool)
    w, b = torch.randn(H, generator=g), torch.randn(H, generator=g)
    ok = dict(q=q, k=k, v=v, prev=prev, key_mask=mask, gate_weight=w, gate_bias=b, mode="gated", scale=None)
    changes = {
        "q rank": dict(q=q[0]),
        "int q": dict(q=q.long()),
        "wrong D": dict(k=k[..., :3]),
        "k heads": dict(k=k[:, :2]),
        "v keys": dict(v=v[:, :, :4]),
        "k dtype": dict(k=k.double()),
        "prev shape": dict(prev=prev[..., :4]),
        "prev dtype": dict(prev=prev.double()),
        "float mask": dict(key_mask=mask.float()),
        "mask shape": dict(key_mask=mask[:, :3]),
        "gate missing": dict(gate_bias=None),
        "gate shape": dict(gate_weight=w[:2]),
        "int gate": dict(gate_weight=w.long()),
        "bogus mode": dict(mode="bogus"),
        "NaN scale": dict(scale=math.nan),
        "inf scale": dict(scale=-math.inf),
        "half q (no CPU kernel)": dict(q=q.half(), k=k.half(), v=v.half(), prev=prev.half()),
    }
    order = ("q", "k", "v", "prev", "key_mask", "gate_weight", "gate_bias", "mode", "scale")
    return {name: tuple({**ok, **change}[n] for n in order) for name, change in changes.items()}


def _error(fn, *args) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.type, str(info.value)


def _to(device_or_mode, args: tuple) -> tuple:
    convert = device_or_mode.from_tensor if hasattr(device_or_mode, "from_tensor") else (lambda t: t.to(device_or_mode))
    return tuple(convert(a) if isinstance(a, torch.Tensor) else a for a in args)


def test_fake_implementation_raises_exactly_the_kernel_errors():
    """Every bad call: the CPU kernel's error = the meta / fake-tensor error = the Python API's."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    for name, args in _bad_calls().items():
        kernel_type, kernel_msg = _error(OP, *args)
        assert kernel_type in (ValueError, TypeError), (name, kernel_type, kernel_msg)
        assert kernel_msg.split(":")[0] in {"q", "k", "v", "prev", "key_mask", "gate_weight", "gate_bias", "mode",
                                            "scale"}, (name, kernel_msg)
        if name != "half q (no CPU kernel)":  # a meta tensor has no kernel, hence no dtype limit
            assert _error(OP, *_to("meta", args)) == (kernel_type, kernel_msg), name
        with FakeTensorMode() as mode:
            fake_args = _to(mode, args)
            assert _error(OP, *fake_args) == (kernel_type, kernel_msg), name
        if name != "half q (no CPU kernel)":  # the API falls back to the reference there
            assert _error(gated_residual_attention, *args) == (kernel_type, kernel_msg), name


def test_backward_op_fake_checks_gradients_like_the_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    q = torch.randn(1, 2, 3, 4)
    out, scores = OP(q, q, q, None, None, None, None, "none")
    bad = (out[..., :2], scores, q, q, q, None, None, None, None, scores, "none", None)
    kernel = _error(BACKWARD_OP, *bad)
    assert kernel[1].startswith("grad_out: expected shape [1, 2, 3, 4], got [1, 2, 3, 2]"), kernel
    with FakeTensorMode() as mode:
        assert _error(BACKWARD_OP, *_to(mode, bad)) == kernel


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wrong D", "bogus mode", "NaN scale", "float mask", "int q"])
def test_errors_under_torch_compile_are_the_kernel_errors(name):
    """Under torch.compile the op's fake implementation raises the kernel's message (Dynamo
    wraps it into its TorchRuntimeError); through the Python API the exception itself."""
    args = _bad_calls()[name]
    kernel_type, kernel_msg = _error(OP, *args)
    torch._dynamo.reset()
    compiled_op = torch.compile(lambda *a: OP(*a), fullgraph=True, backend="eager")
    _, msg = _error(compiled_op, *args)
    assert kernel_msg in msg, msg
    compiled_api = torch.compile(lambda *a: gated_residual_attention(*a), backend="eager")
    assert _error(compiled_api, *args) == (kernel_type, kernel_msg)


# -- autograd modes -----------------------------------------------------------------------------


def _problem(mode: str = "gated", seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    mask = torch.tensor([[True, False, True, True], [True, True, True, False]])
    diff = [rnd(2, 2, 3, 2), rnd(2, 2, 4, 2), rnd(2, 2, 4, 2), rnd(2, 2, 3, 4), rnd(2), rnd(2)]
    return diff, mask


def _as_op(fn, mask, mode):
    def call(q, k, v, prev, w, b):
        return fn(q, k, v, prev, mask, w, b, mode)

    return call


@pytest.mark.parametrize("mode", ["gated", "residual", "none"])
def test_double_backward_matches_reference(mode):
    diff, mask = _problem(mode)
    if mode == "gated":  # numerical second derivatives (slow: once, for q, prev and the gate weight)
        q, k, v, prev, w, b = diff
        fn = _as_op(OP, mask, mode)
        xs = tuple(t.clone().requires_grad_() for t in (q, prev, w))
        assert torch.autograd.gradgradcheck(lambda q, p, w: fn(q, k, v, p, w, b), xs)

    def penalty(fn):  # a gradient penalty: needs create_graph=True through the op
        xs = [t.detach().clone().requires_grad_() for t in diff]
        out, scores = fn(*xs)
        grads = torch.autograd.grad(out.square().sum() + scores.sum(), xs[:3], create_graph=True)
        loss = sum(g.square().sum() for g in grads)
        return torch.autograd.grad(loss, xs, allow_unused=True)

    got = penalty(_as_op(OP, mask, mode))
    want = penalty(_as_op(gated_residual_attention_reference, mask, mode))
    for g, w in zip(got, want):
        if w is None:
            assert g is None or g.abs().max() == 0
        else:
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    assert got[0].abs().max() > 0  # never silently zero


@pytest.mark.parametrize("mode", ["gated", "none"])
def test_forward_mode_ad_matches_reference(mode):
    diff, mask = _problem(mode, seed=1)
    g = torch.Generator().manual_seed(2)
    tangents = tuple(torch.randn(t.shape, generator=g, dtype=t.dtype) for t in diff)
    _, want = torch.func.jvp(_as_op(gated_residual_attention_reference, mask, mode), tuple(diff), tangents)
    assert all(t.abs().max() > 0 for t in want)
    for fn in (_as_op(OP, mask, mode),
               lambda q, k, v, p, w, b: gated_residual_attention(q, k, v, p, mask, w, b, mode, impl="fused")):
        _, got = torch.func.jvp(fn, tuple(diff), tangents)
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(diff, tangents)]
        out, scores = _as_op(OP, mask, mode)(*duals)
        for a, e in zip((fwAD.unpack_dual(out).tangent, fwAD.unpack_dual(scores).tangent), want):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_vmap_over_the_op_matches_a_loop():
    diff, mask = _problem("gated", seed=3)
    q_stack = torch.stack([diff[0], diff[0] * 2])
    fn = _as_op(OP, mask, "gated")
    out = torch.func.vmap(lambda q: fn(q, *diff[1:])[0])(q_stack)
    for i in range(2):
        torch.testing.assert_close(out[i], fn(q_stack[i], *diff[1:])[0])


def test_first_order_backward_stays_fused():
    """Plain backward runs the fused backward kernel (the reference only for create_graph)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    diff, mask = _problem("gated", seed=4)
    xs = [t.clone().requires_grad_() for t in diff]
    out, scores = _as_op(OP, mask, "gated")(*xs)
    with Log() as log:
        (out.sum() + scores.sum()).backward()
    assert log.ops.count(BACKWARD_OP) == 1
    assert torch.ops.aten._softmax.default not in log.ops  # no reference recomputation
