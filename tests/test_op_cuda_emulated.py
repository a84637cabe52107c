"""The CUDA kernels of gated_residual_attention, executed on the CPU by an emulator.

csrc/cuda/emulation/ compiles the exact kernel source (csrc/cuda/gra_kernels.cuh) and host
driver (csrc/cuda/gra_driver.h) as host C++, running each block's 128 threads as fibers with
real __syncthreads / warp-shuffle semantics, NaN-filled shared memory and workspaces, and a
selectable thread order. That checks the indexing, tiling, barriers, on-chip and fallback
paths and the backward math of the CUDA code on machines without a GPU; what it cannot check
(real concurrency, speed, the device compiler) is left to tests/test_op_cuda.py on a GPU.

float16 / bfloat16 run the tensor-core kernels (csrc/cuda/gra_tc_kernels.cuh): the emulator
models the warp-collective nvcuda::wmma operations with its own (deliberately scrambled)
fragment-element mapping, so the kernels are checked not to depend on one.

The module is compiled on first use (~45 s on 2 cores) into build/cuda_emulation/ and reused
while its sources are unchanged.
"""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from conftest import REPO_ROOT
from op_cuda_helpers import (
    NONFINITE_CASES,
    assert_close,
    assert_close_nonfinite,
    check_backward_result,
    check_valid_outputs_equal,
    make_problem,
    nonfinite_problem,
    reference,
)

from mmfuse.ops.validation import check_gra_inputs

pytestmark = pytest.mark.slow

ASCENDING, DESCENDING, SHUFFLED = 0, 1, 2
H100_SMEM = 227 * 1024
# threads resume in a seeded random order at every barrier: results that depend on the order
# (a missing barrier) differ from the reference or between orders
DEFAULT_CONFIG = (H100_SMEM, SHUFFLED, 0)


@pytest.fixture(scope="module")
def emu():
    if not sys.platform.startswith("linux") or shutil.which("c++") is None:
        pytest.skip("the CUDA emulator needs Linux (ucontext) and a C++ compiler")
    from torch.utils.cpp_extension import load

    build_dir = REPO_ROOT / "build" / "cuda_emulation"
    build_dir.mkdir(parents=True, exist_ok=True)
    module = load(
        name="mmfuse_gra_emulated",
        sources=[str(REPO_ROOT / "csrc" / "cuda" / "emulation" / "gra_emulated.cpp")],
        extra_include_paths=[str(REPO_ROOT / "csrc" / "cuda"), str(REPO_ROOT / "csrc")],
        extra_cflags=["-O1", "-Wno-unknown-pragmas"],
        build_directory=str(build_dir),
        verbose=False,
    )
    module.configure(*DEFAULT_CONFIG)
    yield module
    module.configure(*DEFAULT_CONFIG)


def run_forward(emu, p):
    check_gra_inputs(*p.args())  # the emulated module skips the C++ argument checks
    return emu.forward(*p.args())


def run_backward(emu, p, scores):
    return emu.backward(p.grad_out, p.grad_scores, *p.args()[:7], scores, p.mode, p.scale)


def assert_thread_order_does_not_change_results(emu, p, schedule, seed):
    """Forward and backward of ``p`` under the default schedule and under ``schedule`` (with
    ``seed``) are bitwise equal: a missing barrier would let the thread order change them."""
    expected = run_forward(emu, p)
    expected_grads = run_backward(emu, p, expected[1])
    try:
        emu.configure(H100_SMEM, schedule, seed)
        got = run_forward(emu, p)
        got_grads = run_backward(emu, p, got[1])
    finally:
        emu.configure(*DEFAULT_CONFIG)
    for a, b in zip(expected + expected_grads, got + got_grads):
        assert torch.equal(a, b)


def check_against_reference(emu, p, dtype):
    out, scores = run_forward(emu, p)
    ref_out, ref_scores, ref_grads = reference(p)
    assert out.dtype == dtype and scores.dtype == dtype
    assert_close(out, ref_out, dtype, "out")
    assert_close(scores, ref_scores, dtype, "scores")
    grads = run_backward(emu, p, scores)
    check_backward_result(p, grads, ref_grads, dtype)
    return out, scores, grads


DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MODES = ["none", "residual", "gated"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference_with_prev_and_mask(emu, dtype, mode):
    """Lq=37 spans two forward / three backward row blocks, Lk=70 two key tiles; batch 1 has
    every key masked (zero output, no NaN)."""
    p = make_problem(mode=mode, dtype=dtype)
    out, _, grads = check_against_reference(emu, p, dtype)
    assert out[1].abs().max() == 0
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mode", MODES)
def test_without_prev_or_mask(emu, mode):
    p = make_problem(mode=mode, with_prev=False, with_mask=False, Lq=5, Lk=9, D=8, Dv=3)
    check_against_reference(emu, p, torch.float32)


@pytest.mark.parametrize(
    "shape",
    [
        dict(Lq=1, Lk=1, D=1, Dv=1),
        dict(Lq=33, Lk=64, D=64, Dv=64),  # exact tiles, vector loads
        dict(Lq=17, Lk=65, D=130, Dv=7),  # three feature chunks, partial tiles, scalar loads
        dict(Lq=9, Lk=40, D=256, Dv=256, B=1, H=1),
    ],
    ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()),
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_shapes(emu, shape, dtype):
    p = make_problem(mode="gated", dtype=dtype, **shape)
    check_against_reference(emu, p, dtype)


@pytest.mark.parametrize("mode", MODES)
def test_global_fallback_equals_on_chip(emu, mode):
    """With too little shared memory for the score rows, both kernels keep them in a global
    workspace: same arithmetic, so bit-identical results."""
    p = make_problem(mode=mode, dtype=torch.float16, Lq=20, Lk=150)
    on_chip = run_forward(emu, p)
    assert emu.last_rows_in_smem()
    on_chip_grads = run_backward(emu, p, on_chip[1])
    assert emu.last_rows_in_smem()
    try:
        emu.configure(40 * 1024, SHUFFLED, 0)  # rows of 150 keys no longer fit
        spilled = run_forward(emu, p)
        assert not emu.last_rows_in_smem()
        spilled_grads = run_backward(emu, p, spilled[1])
        assert not emu.last_rows_in_smem()
    finally:
        emu.configure(*DEFAULT_CONFIG)
    for a, b in zip(on_chip + on_chip_grads, spilled + spilled_grads):
        assert torch.equal(a, b)


def test_head_dims_beyond_shared_memory_raise(emu):
    p = make_problem(mode="none", Lq=3, Lk=4, D=1024, Dv=4, B=1, H=1)
    try:
        emu.configure(48 * 1024, SHUFFLED, 0)
        with pytest.raises(RuntimeError, match="D=1024 need .* bytes of shared memory"):
            run_forward(emu, p)
    finally:
        emu.configure(*DEFAULT_CONFIG)


@pytest.mark.parametrize("schedule", [ASCENDING, DESCENDING, SHUFFLED], ids=["ascending", "descending", "shuffled"])
def test_thread_order_does_not_change_results(emu, schedule):
    """A missing barrier would let the order in which threads run change the results."""
    p = make_problem(mode="gated", dtype=torch.float32, Lq=20, Lk=70)
    assert_thread_order_does_not_change_results(emu, p, schedule, 1234)


def test_non_contiguous_and_unaligned_inputs(emu):
    """Transposed views are made contiguous; a storage offset of one element disables the
    16-byte loads (scalar path) without changing the result."""
    p = make_problem(mode="gated", dtype=torch.float16, Lq=11, Lk=21, D=16, Dv=16)
    expected = run_forward(emu, p)
    expected_grads = run_backward(emu, p, expected[1])

    def odd(t):  # same values, transposed storage
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)

    def unaligned(t):  # same values at a storage offset of one element
        flat = torch.empty(t.numel() + 1, dtype=t.dtype)
        flat[1:] = t.reshape(-1)
        return flat[1:].view(t.shape)

    for make in (odd, unaligned):
        p2 = make_problem(mode="gated", dtype=torch.float16, Lq=11, Lk=21, D=16, Dv=16)
        p2.q, p2.k, p2.v, p2.prev = (make(t) for t in (p.q, p.k, p.v, p.prev))
        p2.grad_out, p2.grad_scores = make(p.grad_out), make(p.grad_scores)
        if make is odd:
            assert not p2.q.is_contiguous()
        else:
            assert p2.q.data_ptr() % 16 != 0
        got = run_forward(emu, p2)
        got_grads = run_backward(emu, p2, got[1])
        for a, b in zip(expected + expected_grads, got + got_grads):
            assert torch.equal(a, b)


def test_extreme_scores_stay_finite(emu):
    p = make_problem(mode="gated", dtype=torch.float32, Lq=6, Lk=10, D=4, Dv=4, magnitude=70.0)  # |q.k| ~ 1e4
    out, scores = run_forward(emu, p)
    assert scores.abs().max() > 1e3
    ref_out, ref_scores, _ = reference(p)
    assert torch.isfinite(out).all()
    assert_close(out, ref_out, torch.float32, "out")
    assert_close(scores, ref_scores, torch.float32, "scores")


def test_float32_gate_params_with_bfloat16_inputs(emu):
    """Under autocast the gate parameters stay float32 while q/k/v are bfloat16."""
    p = make_problem(mode="gated", dtype=torch.bfloat16, gate_dtype=torch.float32, Lq=7, Lk=12)
    _, _, grads = check_against_reference(emu, p, torch.bfloat16)
    assert grads[4].dtype == torch.float32 and grads[5].dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)  # CUDA cores, tensor cores
def test_zero_keys_and_zero_queries(emu, dtype):
    p = make_problem(mode="gated", Lq=4, Lk=0, with_mask=False, dtype=dtype)
    out, scores = run_forward(emu, p)
    assert out.shape == (2, 2, 4, 24) and out.abs().max() == 0 and scores.shape == (2, 2, 4, 0)
    grads = run_backward(emu, p, scores)
    assert grads[0].abs().max() == 0 and grads[4].abs().max() == 0
    p = make_problem(mode="gated", Lq=0, Lk=5, dtype=dtype)
    out, scores = run_forward(emu, p)
    assert out.shape == (2, 2, 0, 24) and scores.shape == (2, 2, 0, 5)
    grads = run_backward(emu, p, scores)
    assert grads[1].abs().max() == 0 and grads[4].shape == (2,)


# ---------------------------------------------------------------------------------------------
# Tensor-core kernels (float16 / bfloat16)

TC_DTYPES = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize(
    "shape",
    [
        dict(Lq=37, Lk=70, D=20, Dv=24),  # two row blocks, two key tiles, D and Dv not multiples of 16
        dict(Lq=16, Lk=64, D=16, Dv=16, B=1, H=1),  # exact tiles
        dict(Lq=33, Lk=129, D=72, Dv=40, B=1),  # three key tiles, partial everything
        dict(Lq=3, Lk=5, D=7, Dv=3),  # smaller than one fragment
    ],
    ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()),
)
@pytest.mark.parametrize("dtype", TC_DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_tensor_core_path_matches_reference(emu, mode, dtype, shape):
    """Forward and backward of the wmma kernels against float64, with a mask whose batch 1 has
    every key masked (zero output, finite gradients)."""
    p = make_problem(mode=mode, dtype=dtype, **shape)
    out, _, grads = check_against_reference(emu, p, dtype)
    assert emu.last_tensor_cores()
    if p.q.shape[0] > 1:
        assert out[1].abs().max() == 0
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mode", MODES)
def test_tensor_core_path_without_prev_or_mask(emu, mode):
    p = make_problem(mode=mode, dtype=torch.bfloat16, with_prev=False, with_mask=False, Lq=5, Lk=9, D=8, Dv=3)
    check_against_reference(emu, p, torch.bfloat16)
    assert emu.last_tensor_cores()


def test_float32_stays_on_cuda_cores_and_float16_keeps_that_path(emu):
    p = make_problem(mode="gated", dtype=torch.float32, Lq=9, Lk=12)
    run_forward(emu, p)
    assert not emu.last_tensor_cores()
    p16 = make_problem(mode="gated", dtype=torch.float16, Lq=9, Lk=12)
    try:
        emu.configure(H100_SMEM, SHUFFLED, 0, False)  # the CUDA-core kernels for 16-bit inputs
        check_against_reference(emu, p16, torch.float16)
        assert not emu.last_tensor_cores()
    finally:
        emu.configure(*DEFAULT_CONFIG)


@pytest.mark.parametrize("schedule", [ASCENDING, DESCENDING], ids=["ascending", "descending"])
def test_tensor_core_thread_order_does_not_change_results(emu, schedule):
    p = make_problem(mode="gated", dtype=torch.bfloat16, Lq=20, Lk=70)
    assert_thread_order_does_not_change_results(emu, p, schedule, 7)


# ---------------------------------------------------------------------------------------------
# Non-finite values (docs/op.md): the same rule as the reference and the CPU kernel


def run_both(emu):
    def run(p):
        out, scores = run_forward(emu, p)
        return out, scores, run_backward(emu, p, scores)

    return run


@pytest.mark.parametrize("case", NONFINITE_CASES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_nonfinite_values(emu, case, mode, dtype):
    p, clean = nonfinite_problem(case, mode, dtype)
    run = run_both(emu)
    out, scores, grads = run(p)
    ref_out, ref_scores, ref_grads = reference(p)
    assert_close_nonfinite(out, ref_out, dtype, "out")
    assert_close_nonfinite(scores, ref_scores, dtype, "scores")
    for name, g in zip(("q", "k", "v", "prev", "gate_weight", "gate_bias"), grads):
        if ref_grads[name] is not None:
            assert_close_nonfinite(g, ref_grads[name], dtype, f"grad_{name}")
    if clean is not None:
        clean_out, clean_scores, _ = run(clean)
        check_valid_outputs_equal(out, scores, clean_out, clean_scores, p.key_mask)
