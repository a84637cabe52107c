"""Benchmark of the gated residual attention op: fused kernel vs eager vs torch.compile vs SDPA.

For each shape and mode it times, per implementation, the forward (without autograd) and
forward + backward (gradients of both ``out`` and ``scores`` to every differentiable input),
with warm-up calls and ``torch.utils.benchmark.Timer.blocked_autorange`` (:func:`time_calls`:
the median / interquartile range / minimum of the per-call times of its blocks), and measures
the peak extra memory of one call:

* ``fused``: ``gated_residual_attention(impl="fused")`` — the compiled kernel; "n/a" when none
  exists for the device and dtype;
* ``eager``: ``gated_residual_attention_reference`` (the eager PyTorch reference);
* ``compile``: ``torch.compile(gated_residual_attention_reference, fullgraph=True)``, compiled
  afresh per shape and mode; the compile time is reported separately, not in the timings;
* ``sdpa``: ``F.scaled_dot_product_attention`` with the same boolean key mask (mode "none"
  only; it returns no scores, so it moves fewer bytes than the op).

It also reports the achieved bandwidth against the bytes the op must move (:func:`floor_bytes`)
and, when the device's peak bandwidth is known (:data:`PEAK_BANDWIDTH_GBS` or
``--peak-bandwidth``), the percentage of that floor. Every implementation's outputs and
gradients are compared with the eager reference first, so a fast wrong kernel is flagged.

``mmfuse bench attn`` and ``benchmarks/attn_bench.py`` both call :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from mmfuse.bench.provenance import command_line, cpu_name, git_revision, load_average
from mmfuse.ops import (
    MODES,
    fused_kernel_available,
    gated_residual_attention,
    gated_residual_attention_reference,
)

IMPLS: tuple[str, ...] = ("fused", "eager", "compile", "sdpa")
#: version of the JSON layout written by :func:`run` (bump when fields change)
SCHEMA_VERSION = 2  # 2: roofline (flops, binding floor, % of it) per pass and in the environment

DEFAULT_SHAPES = {"cpu": "8x8x128x64,4x4x256x32", "cuda": "32x12x256x64,16x12x512x64"}
DEFAULT_DTYPE = {"cpu": "float32", "cuda": "bfloat16"}
DEFAULT_REPEATS = {"cpu": 10, "cuda": 50}
DEFAULT_WARMUP = {"cpu": 2, "cuda": 10}
DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16,
}
#: allclose tolerances (rtol, atol) of an implementation against the eager reference
TOLERANCES = {torch.float64: (1e-7, 1e-9), torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-2, 5e-2),
              torch.float16: (2e-2, 2e-2)}

#: peak DRAM bandwidth (GB/s) by GPU name, first matching entry wins (most specific first);
#: spec-sheet numbers. ``--peak-bandwidth`` overrides, and is required for GPUs not listed.
PEAK_BANDWIDTH_GBS: tuple[tuple[tuple[str, ...], str, float], ...] = (
    (("GH200",), "GH200 (HBM3)", 4000.0),
    (("H200",), "H200", 4800.0),
    (("H100", "NVL"), "H100 NVL", 3900.0),
    (("H100", "PCIe"), "H100 PCIe", 2000.0),
    (("H100",), "H100 SXM", 3350.0),
    (("B200",), "B200", 8000.0),
    (("A100", "80GB", "PCIe"), "A100 80GB PCIe", 1935.0),
    (("A100", "80GB"), "A100 80GB SXM", 2039.0),
    (("A100",), "A100 40GB", 1555.0),
    (("L40S",), "L40S", 864.0),
    (("L40",), "L40", 864.0),
    (("L4",), "L4", 300.0),
    (("A10G",), "A10G", 600.0),
    (("A10",), "A10", 600.0),
    (("T4",), "T4", 320.0),
    (("V100",), "V100", 900.0),
    (("RTX 4090",), "RTX 4090", 1008.0),
    (("RTX 3090",), "RTX 3090", 936.0),
)


#: dense peak compute (TFLOP/s) by GPU name, first matching entry wins: (16-bit tensor cores with
#: float32 accumulation, TF32 tensor cores, FP32 on CUDA cores); spec-sheet numbers without
#: sparsity. ``--peak-tensor-tflops`` / ``--peak-fp32-tflops`` override.
PEAK_COMPUTE_TFLOPS: tuple[tuple[tuple[str, ...], str, float, float, float], ...] = (
    (("GH200",), "GH200", 989.0, 494.0, 67.0),
    (("H200",), "H200", 989.0, 494.0, 67.0),
    (("H100", "NVL"), "H100 NVL", 835.0, 418.0, 60.0),
    (("H100", "PCIe"), "H100 PCIe", 756.0, 378.0, 51.0),
    (("H100",), "H100 SXM", 989.0, 494.0, 67.0),
    (("A100",), "A100", 312.0, 156.0, 19.5),
)

#: CUDA-core / vector FLOPs per score element besides the matrix products (scale, gate
#: combination, max, exp, sum, normalise; the backward's dN, gate and cosine terms)
ELEMENTWISE_FLOPS_FWD = 8
ELEMENTWISE_FLOPS_BWD = 12


class OptionError(ValueError):
    """A command-line option has a bad value (the message names the option)."""


def peak_bandwidth_for(device_name: str) -> tuple[float, str] | None:
    """``(GB/s, table entry)`` for a GPU name such as "NVIDIA H100 80GB HBM3", else None."""
    for needles, label, gbs in PEAK_BANDWIDTH_GBS:
        if all(n.lower() in device_name.lower() for n in needles):
            return gbs, label
    return None


def peak_compute_for(device_name: str) -> tuple[float, float, float, str] | None:
    """``(tensor-core 16-bit, TF32, FP32 CUDA-core TFLOP/s, table entry)`` for a GPU name, else None."""
    for needles, label, tc, tf32, fp32 in PEAK_COMPUTE_TFLOPS:
        if all(n.lower() in device_name.lower() for n in needles):
            return tc, tf32, fp32, label
    return None


@dataclass(frozen=True)
class AttnShape:
    """Problem size: q ``[B, H, Lq, D]``, k ``[B, H, Lk, D]``, v ``[B, H, Lk, Dv]``."""

    B: int
    H: int
    Lq: int
    Lk: int
    D: int
    Dv: int

    @classmethod
    def parse(cls, text: str) -> AttnShape:
        """``BxHxLxD``, ``BxHxLqxLkxD`` or ``BxHxLqxLkxDxDv`` (positive ints)."""
        parts = text.strip().lower().split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (4, 5, 6) or min(values, default=0) < 1:
            raise OptionError("--shapes: expected BxHxLxD, BxHxLqxLkxD or BxHxLqxLkxDxDv with positive "
                              f"ints, got {text!r}")
        if len(values) == 4:
            B, H, L, D = values
            return cls(B, H, L, L, D, D)
        if len(values) == 5:
            B, H, Lq, Lk, D = values
            return cls(B, H, Lq, Lk, D, D)
        return cls(*values)

    def __str__(self) -> str:
        """The shortest form :meth:`parse` reads back: ``8x8x128x64`` when Lq = Lk and D = Dv."""
        if self.D != self.Dv:
            values = (self.B, self.H, self.Lq, self.Lk, self.D, self.Dv)
        elif self.Lq != self.Lk:
            values = (self.B, self.H, self.Lq, self.Lk, self.D)
        else:
            values = (self.B, self.H, self.Lq, self.D)
        return "x".join(str(n) for n in values)


def floor_bytes(shape: AttnShape, mode: str, impl: str, element_size: int, mask: bool, backward: bool) -> int:
    """Bytes an ideal kernel must move: each input read once and each output written once.

    Forward: read q, k, v, prev (residual / gated), key_mask; write out and scores (SDPA: no
    scores). Backward: read q, k, v, prev, key_mask, grad_out, grad_scores; write grad_q,
    grad_k, grad_v and grad_prev. Gate parameters ([H]) are negligible and left out.
    """
    s = shape
    qk = s.B * s.H * (s.Lq + s.Lk) * s.D
    v = s.B * s.H * s.Lk * s.Dv
    out = s.B * s.H * s.Lq * s.Dv
    score_map = s.B * s.H * s.Lq * s.Lk
    has_scores = impl != "sdpa"
    has_prev = mode != "none"
    mask_bytes = s.B * s.Lk if mask else 0
    forward = (qk + v + out + (has_scores + has_prev) * score_map) * element_size + mask_bytes
    if not backward:
        return forward
    # reads q, k, v, grad_out, grad_scores, prev; writes grad_q, grad_k, grad_v, grad_prev
    maps = has_scores + 2 * has_prev
    return forward + (2 * (qk + v) + out + maps * score_map) * element_size + mask_bytes


def matmul_flops(shape: AttnShape, backward: bool) -> int:
    """FLOPs of the matrix products an ideal kernel does (2 per multiply-add).

    Forward: s = q.K^T and out = a.V. Backward adds dA = dOut.V^T, dQ = dS.K, dK = dS^T.Q and
    dV = A^T.dOut (the forward's A kept; a kernel that recomputes s does 2 Lq Lk D more).
    """
    s = shape
    per_map = 2 * s.B * s.H * s.Lq * s.Lk
    forward = per_map * (s.D + s.Dv)
    return forward + (per_map * (2 * s.D + 2 * s.Dv) if backward else 0)


def elementwise_flops(shape: AttnShape, backward: bool) -> int:
    """Vector FLOPs on the [B, H, Lq, Lk] score maps (softmax, gate; see ELEMENTWISE_FLOPS_*)."""
    score_map = shape.B * shape.H * shape.Lq * shape.Lk
    return score_map * (ELEMENTWISE_FLOPS_FWD + (ELEMENTWISE_FLOPS_BWD if backward else 0))


@dataclass
class Peaks:
    """The device's roofline parameters; None where unknown or not applicable."""

    bandwidth_gbs: float | None
    bandwidth_source: str | None
    tensor_tflops: float | None  # 16-bit tensor cores (float32 accumulation)
    tf32_tflops: float | None
    fp32_tflops: float | None  # CUDA cores / CPU vector units (CPU: the measured GEMM rate)
    compute_source: str | None


def roofline(shape: AttnShape, mode: str, impl: str, dtype: torch.dtype, mask: bool, backward: bool,
             peaks: Peaks, device_type: str) -> dict[str, Any]:
    """Analytic floors of one pass: bytes / bandwidth, matrix FLOPs / tensor-core peak and all
    FLOPs / CUDA-core (CPU: measured GEMM) peak, and which of them binds for this dtype."""
    n_bytes = floor_bytes(shape, mode, impl, torch.empty((), dtype=dtype).element_size(), mask, backward)
    mm, ew = matmul_flops(shape, backward), elementwise_flops(shape, backward)

    def ms(amount: float, rate: float | None) -> float | None:
        return 1e3 * amount / rate if rate else None

    bandwidth = ms(n_bytes, peaks.bandwidth_gbs * 1e9 if peaks.bandwidth_gbs else None)
    cuda_core = ms(mm + ew, peaks.fp32_tflops * 1e12 if peaks.fp32_tflops else None)
    tensor_core = None
    if device_type == "cuda":
        tc_rate = peaks.tensor_tflops if dtype in (torch.float16, torch.bfloat16) else None
        if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
            tc_rate = peaks.tf32_tflops
        if tc_rate:
            # matrix products on tensor cores, the element-wise rest on CUDA cores
            tensor_core = max(1e3 * mm / (tc_rate * 1e12), ms(ew, peaks.fp32_tflops * 1e12) or 0.0)
    compute = tensor_core if tensor_core is not None else cuda_core
    kinds = {"bandwidth": bandwidth, "tensor-core" if tensor_core is not None else "cuda-core": compute}
    known = {k: v for k, v in kinds.items() if v is not None}
    binding = max(known, key=known.get) if known else None
    return {
        "flops": mm + ew, "matmul_flops": mm, "bytes": n_bytes,
        "bandwidth_floor_ms": bandwidth, "tensor_core_floor_ms": tensor_core, "cuda_core_floor_ms": cuda_core,
        "binding_floor": binding, "binding_floor_ms": known.get(binding) if binding else None,
    }


def measure_cpu_peaks(dtype: torch.dtype, seconds: float = 0.3) -> tuple[float, float]:
    """``(GEMM GFLOP/s, copy GB/s)`` measured here: a 512^3 torch.mm in ``dtype`` (float32 for
    16-bit dtypes) and a 64 MiB tensor copy (read + write), best of a few runs each."""
    gemm_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    a, b = torch.randn(512, 512, dtype=gemm_dtype), torch.randn(512, 512, dtype=gemm_dtype)
    x = torch.empty(16 * 2**20, dtype=torch.float32)
    y = torch.empty_like(x)

    def best(fn: Callable[[], object]) -> float:
        fn()
        return min(autorange(fn, seconds).times)

    gflops = 2 * 512**3 / best(lambda: torch.mm(a, b)) / 1e9
    gbs = 2 * x.numel() * x.element_size() / best(lambda: y.copy_(x)) / 1e9
    return gflops, gbs


# --------------------------------------------------------------------------------------------
# Problems and implementations


@dataclass
class Problem:
    """Inputs of one (shape, mode): tensors for the op plus output gradients for backward."""

    shape: AttnShape
    mode: str
    q: Tensor
    k: Tensor
    v: Tensor
    prev: Tensor | None
    key_mask: Tensor | None
    gate_weight: Tensor | None
    gate_bias: Tensor | None
    grad_out: Tensor
    grad_scores: Tensor

    def args(self, requires_grad: bool) -> list[Tensor | None]:
        """Positional op arguments; with ``requires_grad``, fresh leaves of the differentiable ones."""
        args = [self.q, self.k, self.v, self.prev, self.key_mask, self.gate_weight, self.gate_bias]
        if requires_grad:
            args = [a.detach().requires_grad_() if a is not None and a.is_floating_point() else a
                    for a in args]
        return args


def make_problem(shape: AttnShape, mode: str, dtype: torch.dtype, device: torch.device, mask: bool,
                 seed: int = 0) -> Problem:
    """Random inputs; with ``mask``, every other batch element has its last quarter of keys masked."""
    g = torch.Generator().manual_seed(seed)

    def randn(*size: int) -> Tensor:
        return torch.randn(*size, generator=g).to(device=device, dtype=dtype)

    s = shape
    key_mask = None
    if mask:
        key_mask = torch.ones(s.B, s.Lk, dtype=torch.bool)
        key_mask[1::2, s.Lk - s.Lk // 4:] = False
        key_mask = key_mask.to(device)
    gated = mode == "gated"
    return Problem(
        shape=s, mode=mode,
        q=randn(s.B, s.H, s.Lq, s.D), k=randn(s.B, s.H, s.Lk, s.D), v=randn(s.B, s.H, s.Lk, s.Dv),
        prev=randn(s.B, s.H, s.Lq, s.Lk) if mode != "none" else None,
        key_mask=key_mask,
        gate_weight=randn(s.H) if gated else None, gate_bias=randn(s.H) if gated else None,
        grad_out=randn(s.B, s.H, s.Lq, s.Dv), grad_scores=randn(s.B, s.H, s.Lq, s.Lk),
    )


def _sdpa(q: Tensor, k: Tensor, v: Tensor, prev: Tensor | None, key_mask: Tensor | None,
          *_: Any) -> tuple[Tensor]:
    mask = key_mask[:, None, None, :] if key_mask is not None else None
    return (torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),)


def make_impl(impl: str, mode: str) -> Callable[..., tuple[Tensor, ...]]:
    """The callable of one implementation: ``f(q, k, v, prev, key_mask, gate_weight, gate_bias)``."""
    if impl == "fused":
        return functools.partial(gated_residual_attention, mode=mode, impl="fused")
    if impl == "eager":
        return functools.partial(gated_residual_attention_reference, mode=mode)
    if impl == "compile":
        torch._dynamo.reset()  # a fresh cache: no recompile limit, compile time attributable to this case
        return torch.compile(functools.partial(gated_residual_attention_reference, mode=mode), fullgraph=True,
                             dynamic=False)
    if impl == "sdpa":
        return _sdpa
    raise ValueError(f"impl: expected one of {', '.join(IMPLS)}, got {impl!r}")


def forward_step(fn: Callable[..., tuple[Tensor, ...]], problem: Problem) -> Callable[[], tuple[Tensor, ...]]:
    args = problem.args(requires_grad=False)

    def step() -> tuple[Tensor, ...]:
        with torch.no_grad():
            return fn(*args)

    return step


def fwd_bwd_step(fn: Callable[..., tuple[Tensor, ...]], problem: Problem) -> Callable[[], tuple[Tensor, ...]]:
    """Forward + ``torch.autograd.grad`` of all outputs w.r.t. every differentiable input."""
    args = problem.args(requires_grad=True)
    leaves = [a for a in args if a is not None and a.requires_grad]
    cotangents = (problem.grad_out, problem.grad_scores)

    def step() -> tuple[Tensor, ...]:
        outputs = fn(*args)
        return torch.autograd.grad(outputs, leaves, cotangents[: len(outputs)])

    return step


# --------------------------------------------------------------------------------------------
# Measurement


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: shortest run of one ``blocked_autorange`` (seconds)
MIN_RUN_TIME = 0.1


def autorange(step: Callable[[], object], min_run_time: float = MIN_RUN_TIME) -> Any:
    """``torch.utils.benchmark.Timer.blocked_autorange`` of ``step()``: blocks of calls sized so that
    the timer's overhead is negligible, each block timed once (the Timer synchronises CUDA), for at
    least ``min_run_time`` seconds, with torch's current number of threads (the Timer would use 1)."""
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time)


def time_calls(step: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds per call, at least ``repeats`` samples after ``warmup`` calls: each sample is the mean
    time per call of one block of :func:`autorange` (``Measurement.times``)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times: list[float] = []
    while len(times) < repeats:
        times.extend(autorange(step).times)
    return times


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return ("torch.cuda.max_memory_allocated during one call minus the memory allocated before it "
                "(inputs excluded, outputs and temporaries included)")
    return ("peak of the running sum of the allocations and frees made through ATen's CPU allocator "
            "during one call, from torch.profiler memory events (inputs excluded, outputs and temporaries "
            "included; Python objects and allocator caching not counted)")


def _cpu_peak_extra_bytes(step: Callable[[], object]) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # read when the profiler starts: no per-run log lines
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    allocations = []
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))
    total = peak = 0
    for _, size in sorted(allocations):
        total += size
        peak = max(peak, total)
    return peak


def peak_extra_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Peak memory one call allocates beyond what existed before it (see :func:`memory_kind`)."""
    if device.type != "cuda":
        return _cpu_peak_extra_bytes(step)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


@dataclass
class PassResult:
    """Timing and memory of one pass ("forward" or "fwd_bwd") of one implementation."""

    median_ms: float
    q25_ms: float
    q75_ms: float
    iqr_ms: float
    min_ms: float
    peak_mem_mib: float
    floor_bytes: int
    gb_per_s: float
    pct_of_floor: float | None
    speedup_vs_eager: float | None = None
    speedup_vs_compile: float | None = None
    flops: int | None = None
    binding_floor: str | None = None
    binding_floor_ms: float | None = None
    pct_of_binding_floor: float | None = None


@dataclass
class CaseResult:
    """One row: a (shape, mode, implementation)."""

    shape: str
    B: int
    H: int
    Lq: int
    Lk: int
    D: int
    Dv: int
    mode: str
    impl: str
    available: bool
    note: str = ""
    forward: PassResult | None = None
    fwd_bwd: PassResult | None = None
    compile_s: float | None = None
    max_abs_diff_vs_eager: float | None = None
    matches_eager: bool | None = None
    roofline: dict[str, Any] | None = None  # per pass: see :func:`roofline`


def summarize(times: list[float], peak_bytes: int, n_bytes: int, peak_gbs: float | None) -> PassResult:
    q25, _, q75 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    median = statistics.median(times)
    gbs = n_bytes / median / 1e9
    return PassResult(
        median_ms=1e3 * median, q25_ms=1e3 * q25, q75_ms=1e3 * q75, iqr_ms=1e3 * (q75 - q25),
        min_ms=1e3 * min(times),
        peak_mem_mib=peak_bytes / 2**20, floor_bytes=n_bytes, gb_per_s=gbs,
        pct_of_floor=100 * gbs / peak_gbs if peak_gbs else None,
    )


def max_abs_diff(got: Sequence[Tensor], want: Sequence[Tensor], dtype: torch.dtype) -> tuple[float, bool]:
    """Largest |got - want| over paired tensors and whether all are allclose at ``dtype``'s tolerance."""
    rtol, atol = TOLERANCES[dtype]
    diff, close = 0.0, True
    for a, b in zip(got, want):
        a, b = a.double(), b.double()
        diff = max(diff, float((a - b).abs().max()) if a.numel() else 0.0)
        close = close and bool(torch.allclose(a, b, rtol=rtol, atol=atol))
    return diff, close


@dataclass
class BenchConfig:
    device: str
    dtype: str
    shapes: list[str]
    modes: list[str]
    impls: list[str]
    backward: bool
    repeats: int
    warmup: int
    mask: bool
    seed: int


def run_case(shape: AttnShape, mode: str, config: BenchConfig, peak_gbs: float | None,
             peaks: Peaks | None = None) -> list[CaseResult]:
    """Check and measure every implementation on one (shape, mode)."""
    device, dtype = torch.device(config.device), DTYPES[config.dtype]
    problem = make_problem(shape, mode, dtype, device, config.mask, config.seed)
    expected = functools.cache(lambda out_only: expected_outputs(problem, config.backward, out_only))
    base = dict(shape=str(shape), B=shape.B, H=shape.H, Lq=shape.Lq, Lk=shape.Lk, D=shape.D, Dv=shape.Dv,
                mode=mode)
    results = []
    for impl in config.impls:
        if impl == "sdpa" and mode != "none":
            continue  # SDPA has no residual / gated scores
        if impl == "fused" and not fused_kernel_available(device, dtype):
            results.append(CaseResult(**base, impl=impl, available=False,
                                      note=f"no compiled mmfuse kernel for {device.type}/{config.dtype}"))
            continue
        try:
            results.append(_measure_impl(impl, problem, config, peak_gbs, base, expected, peaks))
        except RuntimeError as exc:  # includes CUDA OOM and compile failures: record, go on
            note = f"failed: {type(exc).__name__}: {exc}"
            results.append(CaseResult(**base, impl=impl, available=False, note=note))
    _add_speedups(results)
    return results


def _out_only(fn: Callable[..., tuple[Tensor, ...]]) -> Callable[..., tuple[Tensor]]:
    return lambda *args: fn(*args)[:1]


def expected_outputs(problem: Problem, backward: bool, out_only: bool) -> list[Tensor]:
    """The eager reference's outputs (and gradients) that an implementation is checked against.

    ``out_only`` (SDPA): only ``out``, and gradients from ``grad_out`` alone.
    """
    eager = make_impl("eager", problem.mode)
    if out_only:
        eager = _out_only(eager)
    want = list(forward_step(eager, problem)())
    if backward:
        want += list(fwd_bwd_step(eager, problem)())
    return want


def _measure_impl(impl: str, problem: Problem, config: BenchConfig, peak_gbs: float | None,
                  base: dict[str, Any], expected: Callable[[bool], list[Tensor]],
                  peaks: Peaks | None = None) -> CaseResult:
    device, dtype = torch.device(config.device), DTYPES[config.dtype]
    fn = make_impl(impl, problem.mode)
    steps = {"forward": forward_step(fn, problem)}
    if config.backward:
        steps["fwd_bwd"] = fwd_bwd_step(fn, problem)

    # first calls: compile (torch.compile) and the correctness check against eager
    compile_s = 0.0
    got: list[Tensor] = []
    for name, step in steps.items():
        synchronize(device)
        t0 = time.perf_counter()
        outputs = step()
        synchronize(device)
        compile_s += time.perf_counter() - t0
        got += list(outputs)
    diff, close = max_abs_diff(got, expected(impl == "sdpa"), dtype)

    passes, rooflines = {}, {}
    for name, step in steps.items():
        times = time_calls(step, config.repeats, config.warmup, device)
        n_bytes = floor_bytes(problem.shape, problem.mode, impl, problem.q.element_size(), config.mask,
                              backward=name == "fwd_bwd")
        passes[name] = summarize(times, peak_extra_bytes(step, device), n_bytes, peak_gbs)
        if peaks is not None:
            roof = roofline(problem.shape, problem.mode, impl, dtype, config.mask, name == "fwd_bwd", peaks,
                            device.type)
            result = passes[name]
            result.flops = roof["flops"]
            result.binding_floor, result.binding_floor_ms = roof["binding_floor"], roof["binding_floor_ms"]
            if roof["binding_floor_ms"] is not None:
                result.pct_of_binding_floor = 100 * roof["binding_floor_ms"] / result.median_ms
            rooflines[name] = roof
    if impl == "compile":
        compile_s -= sum(p.median_ms for p in passes.values()) / 1e3  # keep only the compilation
    rtol, atol = TOLERANCES[dtype]
    return CaseResult(
        **base, impl=impl, available=True,
        note="" if close else f"MISMATCH: outputs/gradients differ from eager (rtol={rtol}, atol={atol})",
        forward=passes["forward"], fwd_bwd=passes.get("fwd_bwd"),
        compile_s=max(compile_s, 0.0) if impl == "compile" else None,
        max_abs_diff_vs_eager=diff, matches_eager=close, roofline=rooflines or None,
    )


def _add_speedups(results: list[CaseResult]) -> None:
    by_impl = {r.impl: r for r in results if r.available}
    for r in by_impl.values():
        for name in ("forward", "fwd_bwd"):
            this = getattr(r, name)
            if this is None:
                continue
            for other, attr in (("eager", "speedup_vs_eager"), ("compile", "speedup_vs_compile")):
                ref = getattr(by_impl[other], name) if other in by_impl else None
                ratio = ref.median_ms / this.median_ms if ref is not None and other != r.impl else None
                setattr(this, attr, ratio)


# --------------------------------------------------------------------------------------------
# Environment, options, entry point


def environment(device: torch.device, dtype: torch.dtype, peak: tuple[float, str] | None) -> dict[str, Any]:
    from mmfuse.ops import cpu_capability, extension_available

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {cpu_name()}"
    return {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        **git_revision(),
        "extension": extension_available(),
        "fused_kernel": fused_kernel_available(device, dtype),
        "cpu_capability": cpu_capability() if device.type == "cpu" else None,
        "peak_bandwidth_gbs": peak[0] if peak else None,
        "peak_bandwidth_source": peak[1] if peak else None,
        "memory_kind": memory_kind(device),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the attention benchmark (shared by ``mmfuse bench attn`` and the script)."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help=f"default: {DEFAULT_DTYPE['cpu']} on CPU, {DEFAULT_DTYPE['cuda']} on CUDA")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help=f"comma-separated subset of {','.join(IMPLS)} (sdpa runs for mode none only)")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated BxHxLxD, BxHxLqxLkxD or BxHxLqxLkxDxDv "
                             f"(default: {DEFAULT_SHAPES['cpu']} on CPU, {DEFAULT_SHAPES['cuda']} on CUDA)")
    parser.add_argument("--backward", action=argparse.BooleanOptionalAction, default=True,
                        help="also time forward + backward (default: on)")
    parser.add_argument("--mask", action=argparse.BooleanOptionalAction, default=True,
                        help="key mask with padding in every other batch element (default: on)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"at least this many timed samples (blocked_autorange blocks) per measurement (default: {DEFAULT_REPEATS['cpu']} CPU, "
                             f"{DEFAULT_REPEATS['cuda']} CUDA)")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed calls first (default: {DEFAULT_WARMUP['cpu']} CPU, "
                             f"{DEFAULT_WARMUP['cuda']} CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--peak-bandwidth", type=float, default=None, metavar="GB/s",
                        help="the device's peak memory bandwidth (default: from the GPU name; none on CPU)")
    parser.add_argument("--peak-tensor-tflops", type=float, default=None, metavar="TFLOP/s",
                        help="16-bit tensor-core peak for the roofline (default: from the GPU name)")
    parser.add_argument("--peak-fp32-tflops", type=float, default=None, metavar="TFLOP/s",
                        help="FP32 CUDA-core peak for the roofline (default: from the GPU name; on CPU "
                             "the GEMM rate measured at the start)")
    parser.add_argument("--cold-compile", action="store_true",
                        help="compile with an empty inductor cache (a temporary TORCHINDUCTOR_CACHE_DIR) so "
                             "that 'compile s' is a cold compile (default: the usual, possibly warm, cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, default=None, metavar="PATH",
                        help="write the table as Markdown")


def _split(text: str, allowed: Sequence[str], option: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if not items or bad:
        raise OptionError(f"{option}: expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
    return items


def resolve_config(args: argparse.Namespace) -> BenchConfig:
    """Validate the options and fill in per-device defaults."""
    requested = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    requested = "cpu" if requested == "auto" else requested
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise OptionError(f"--device: expected cpu, cuda, cuda:N or auto, got {args.device!r}") from exc
    if device.type not in ("cpu", "cuda"):
        raise OptionError(f"--device: expected cpu, cuda, cuda:N or auto, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda: no CUDA device is available")
    kind = device.type
    for name in ("repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise OptionError(f"--{name}: expected a positive int, got {value}")
    if args.warmup is not None and args.warmup < 0:
        raise OptionError(f"--warmup: expected an int >= 0, got {args.warmup}")
    bandwidth = args.peak_bandwidth
    if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise OptionError(f"--peak-bandwidth: expected a positive number of GB/s, got {bandwidth}")
    for name in ("peak_tensor_tflops", "peak_fp32_tflops"):
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise OptionError(f"--{name.replace('_', '-')}: expected a positive number of TFLOP/s, got {value}")
    shapes = [str(AttnShape.parse(s)) for s in (args.shapes or DEFAULT_SHAPES[kind]).split(",") if s.strip()]
    if not shapes:
        raise OptionError(f"--shapes: expected at least one shape, got {args.shapes!r}")
    return BenchConfig(
        device=str(device), dtype=args.dtype or DEFAULT_DTYPE[kind], shapes=shapes,
        modes=_split(args.modes, MODES, "--modes"), impls=_split(args.impls, IMPLS, "--impls"),
        backward=args.backward, repeats=args.repeats or DEFAULT_REPEATS[kind],
        warmup=args.warmup if args.warmup is not None else DEFAULT_WARMUP[kind],
        mask=args.mask, seed=args.seed,
    )


def _peak_bandwidth(args: argparse.Namespace, device: torch.device) -> tuple[float, str] | None:
    """``(GB/s, where it came from)``: the flag, else the GPU table; None on CPU or unknown GPUs."""
    if args.peak_bandwidth is not None:
        return args.peak_bandwidth, "--peak-bandwidth"
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = peak_bandwidth_for(name)
    if peak is None:
        warnings.warn(f"no peak bandwidth known for {name!r}; pass --peak-bandwidth GB/s for % of floor",
                      stacklevel=3)
    return peak


def _roofline_peaks(args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                    bandwidth: tuple[float, str] | None) -> Peaks:
    """The roofline's peaks: flags first, then the GPU table, and on CPU rates measured now."""
    tensor = getattr(args, "peak_tensor_tflops", None)
    fp32 = getattr(args, "peak_fp32_tflops", None)
    if device.type == "cuda":
        table = peak_compute_for(torch.cuda.get_device_name(device))
        tf32 = table[1] if table else None
        source = "flags" if tensor and fp32 else (f"spec sheet ({table[3]})" if table else None)
        if table:
            tensor, fp32 = tensor or table[0], fp32 or table[2]
        return Peaks(bandwidth[0] if bandwidth else None, bandwidth[1] if bandwidth else None,
                     tensor, tf32, fp32, source)
    gflops, gbs = measure_cpu_peaks(dtype)
    bw = (bandwidth[0], bandwidth[1]) if bandwidth else (gbs, "measured: 64 MiB tensor copy")
    source = "--peak-fp32-tflops" if fp32 else "measured: 512x512x512 torch.mm (MKL)"
    return Peaks(bw[0], bw[1], None, None, fp32 or gflops / 1e3, source)


@contextlib.contextmanager
def _inductor_cache(cold: bool) -> Iterator[str]:
    """With ``cold``, point inductor at an empty temporary cache (restored afterwards)."""
    if not cold:
        yield "default, may be warm"
        return
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="mmfuse-inductor-") as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp  # inductor reads it at each compile
        try:
            yield "empty at start (--cold-compile)"
        finally:
            if previous is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def run(args: argparse.Namespace, command: str | None = None) -> int:
    """Run every (shape, mode), print the table, write JSON / Markdown; returns an exit code
    (1 when an implementation failed or disagreed with the eager reference)."""
    from mmfuse.bench.report import print_table, result_table, results_markdown, roofline_table
    from mmfuse.utils.io import atomic_write_text

    config = resolve_config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(config.device), DTYPES[config.dtype]
    bandwidth = _peak_bandwidth(args, device)
    env = environment(device, dtype, bandwidth)
    peaks = _roofline_peaks(args, device, dtype, bandwidth)
    env["roofline_peaks"] = asdict(peaks)
    load_start = load_average()
    started = time.perf_counter()
    results: list[CaseResult] = []
    with _inductor_cache(args.cold_compile and "compile" in config.impls) as cache:
        env["inductor_cache"] = cache
        for shape in config.shapes:
            for mode in config.modes:
                results += run_case(AttnShape.parse(shape), mode, config, env["peak_bandwidth_gbs"], peaks)
    if load_start is not None:
        env["load_avg"] = [load_start, load_average()]
    payload = {
        "benchmark": "attn",
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or command_line(),
        "wall_s": time.perf_counter() - started,
        "environment": env,
        "config": asdict(config),
        "results": [asdict(r) for r in results],
    }
    print_table(result_table(payload))
    roof = roofline_table(payload)
    if roof is not None:
        print_table(roof)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown is not None:
        atomic_write_text(args.markdown, results_markdown(payload))
        print(f"wrote {args.markdown}")
    failed = [r for r in results
              if (not r.available and r.note.startswith("failed")) or r.matches_eager is False]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None, *, invoked_as: str = "python benchmarks/attn_bench.py") -> int:
    """Command-line entry point; ``invoked_as`` is recorded (with the options) as the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=invoked_as, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args, command=command_line(invoked_as, argv))
    except OptionError as exc:  # bad option values, an unavailable device
        parser.error(str(exc))
