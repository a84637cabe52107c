"""End-to-end RADM training-step benchmark: fused attention op vs the eager reference, eager
and under ``torch.compile``.

One step = forward + backward + AdamW update on a fixed random batch (texts of ``max_length``
tokens with some padding, images at the model's input size, labels for every task). For each
attention implementation and each ``--compile`` setting (``none`` = eager; otherwise the
``torch.compile`` backend, ``fullgraph=True``, applied to the whole model: forward and loss,
whose backward AOTAutograd compiles too; the optimizer step stays eager) it reports samples
per second and milliseconds per step (from the median step time, robust to the noise of a
shared machine; min and max are kept too), the first step's time (which includes compiling)
and peak memory:

* CPU (default preset ``radm-tiny``, float32): each implementation runs in a fresh child process
  and the peak is that process's maximum resident set size (RSS, includes the Python runtime);
* CUDA (default preset ``radm-base``, bf16 autocast): ``torch.cuda.max_memory_allocated``.

The fused rows are skipped (marked unavailable) when no compiled kernel exists for the device
and dtype. ``mmfuse bench model`` and ``benchmarks/model_bench.py`` both call :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmfuse.bench.provenance import command_line, cpu_name, git_revision, load_average

DEFAULT_PRESETS = {"cpu": "radm-tiny", "cuda": "radm-base"}
DEFAULT_BATCH = {"cpu": 16, "cuda": 32}
DEFAULT_AMP = {"cpu": "none", "cuda": "bf16"}
IMPLS = ("fused", "reference")
#: ``--compile`` values: "none" (eager) or a torch.compile backend
DEFAULT_COMPILE = ("none", "inductor")
#: version of the JSON layout written by :func:`run` (bump when fields change)
SCHEMA_VERSION = 2


@dataclass
class BenchConfig:
    device: str
    preset: str
    impl: str
    batch_size: int
    text_length: int | None
    amp: str
    steps: int
    warmup: int
    threads: int | None
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)
    compile: str = "none"


@dataclass
class BenchResult:
    config: BenchConfig
    available: bool
    samples_per_s: float | None = None
    step_ms: float | None = None
    step_ms_min: float | None = None
    step_ms_max: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: str = ""
    final_loss: float | None = None
    first_step_s: float | None = None
    note: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the model benchmark (shared by ``mmfuse bench model`` and the script)."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, plus CUDA when available (default: auto)")
    parser.add_argument("--preset", default=None,
                        help=f"model preset or config (default: {DEFAULT_PRESETS['cpu']} on CPU, "
                             f"{DEFAULT_PRESETS['cuda']} on CUDA)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="model config override, repeatable")
    parser.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS),
                        help="attention implementations to compare (default: fused reference)")
    parser.add_argument("--compile", nargs="+", default=list(DEFAULT_COMPILE), metavar="BACKEND",
                        help="'none' (eager) and/or torch.compile backends for the whole model, e.g. "
                             "inductor, aot_eager (default: none inductor)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"samples per step (default: {DEFAULT_BATCH['cpu']} CPU, {DEFAULT_BATCH['cuda']} CUDA)")
    parser.add_argument("--text-length", type=int, default=None,
                        help="tokens per text (default: the text encoder's max_length)")
    parser.add_argument("--amp", choices=("auto", "none", "bf16"), default="auto",
                        help="autocast dtype (default: none on CPU, bf16 on CUDA)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true",
                        help="CPU: measure in this process instead of one child per implementation "
                             "(faster start, but the RSS peak then mixes the implementations)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")


def _random_batch(model: Any, batch_size: int, text_length: int | None, device: Any) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(1234)
    encoder = model.text_encoder
    length = min(text_length or encoder.max_length, encoder.max_length)
    ids = torch.randint(5, encoder.vocab_size, (batch_size, length), generator=generator)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    for row in range(1, batch_size, 2):  # every other text is padded to 3/4 of the length
        mask[row, (3 * length) // 4:] = 0
        ids[row, (3 * length) // 4:] = 0
    height, width = model.image_encoder.image_size
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.randn(batch_size, 3, height, width, generator=generator),
        "labels": {task: torch.randint(0, n, (batch_size,), generator=generator) for task, n in model.heads.tasks.items()},
    }
    return {k: ({t: y.to(device) for t, y in v.items()} if isinstance(v, dict) else v.to(device)) for k, v in batch.items()}


def measure(config: BenchConfig) -> BenchResult:
    """Build the model, run ``warmup`` + ``steps`` training steps with ``config.impl``, measure."""
    import resource

    import torch

    from mmfuse.models.builder import build_model
    from mmfuse.ops import fused_kernel_available

    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    amp_dtype = torch.bfloat16 if config.amp == "bf16" else None
    compute_dtype = amp_dtype or torch.float32
    if config.impl == "fused" and not fused_kernel_available(device, compute_dtype):
        return BenchResult(config, available=False,
                           note=f"no compiled kernel for {device.type}/{str(compute_dtype).replace('torch.', '')}")
    torch.manual_seed(config.seed)
    model = build_model(config.preset, **config.overrides).to(device)
    model.set_attention_impl(config.impl)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = _random_batch(model, config.batch_size, config.text_length, device)
    forward = model if config.compile == "none" else torch.compile(model, backend=config.compile, fullgraph=True)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = forward(batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Timed by hand, one training step per sample: torch.utils.benchmark's Timer.timeit runs two
    # untimed warm-up calls before every measurement (and blocked_autorange blocks of calls), which
    # would take optimizer steps outside the count and time the first, compiling step never.
    first_step_s = None
    for i in range(config.warmup):
        start = time.perf_counter()
        step()
        synchronize()
        if i == 0:
            first_step_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(config.steps):
        start = time.perf_counter()
        loss = step()
        synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"
    median = statistics.median(times)
    return BenchResult(config, available=True, samples_per_s=config.batch_size / median, step_ms=1000 * median,
                       step_ms_min=1000 * min(times), step_ms_max=1000 * max(times), peak_memory_mb=peak,
                       memory_kind=kind, final_loss=float(loss), first_step_s=first_step_s)


def _measure_in_child(config: BenchConfig) -> BenchResult:
    """Run :func:`measure` in a fresh process so that its RSS peak is its own."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(measure, (config,))


def _configs(args: argparse.Namespace) -> list[BenchConfig]:
    import torch

    from mmfuse.core.config import parse_set_overrides

    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    else:
        devices = [args.device]
    for name in ("steps", "batch_size", "text_length", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive int, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup: expected an int >= 0, got {args.warmup}")
    compiled = [backend for backend in args.compile if backend != "none"]
    if compiled and args.warmup < 1:
        raise ValueError("--warmup: expected at least 1 with --compile (the first step compiles)")
    from torch._dynamo import list_backends

    known = set(list_backends(exclude_tags=())) | {"none"}
    for backend in args.compile:
        if backend not in known:
            raise ValueError(f"--compile: expected 'none' or a torch.compile backend ({', '.join(sorted(known))}), "
                             f"got {backend!r}")
    overrides = parse_set_overrides(args.set)
    return [
        BenchConfig(
            device=device,
            preset=args.preset or DEFAULT_PRESETS[device],
            impl=impl,
            batch_size=args.batch_size or DEFAULT_BATCH[device],
            text_length=args.text_length,
            amp=DEFAULT_AMP[device] if args.amp == "auto" else args.amp,
            steps=args.steps,
            warmup=args.warmup,
            threads=args.threads,
            seed=args.seed,
            overrides=overrides,
            compile=backend,
        )
        for device in devices
        for backend in dict.fromkeys(args.compile)
        for impl in args.impl
    ]


def _environment() -> dict[str, Any]:
    import torch

    from mmfuse.ops import extension_available, fused_kernel_available

    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_name": cpu_name(),
        **git_revision(),
        "cpu_count": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "extension": extension_available(),
        "fused_kernels": {device: fused_kernel_available(device) for device in ("cpu", "cuda")},
    }
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name()
    return env


def _print_table(results: list[BenchResult]) -> None:
    from rich.table import Table

    from mmfuse.utils.console import console

    reference = {(r.config.device, r.config.preset): r for r in results
                 if r.config.impl == "reference" and r.config.compile == "none" and r.available}
    table = Table(title="RADM train step (forward + backward + AdamW)")
    columns = ("device", "preset", "impl", "compile", "amp", "batch", "samples/s", "ms/step", "min–max ms",
               "1st step s", "peak MB", "speed-up vs eager ref")
    for column in columns:
        table.add_column(column, justify="right" if column not in ("device", "preset", "impl", "amp") else "left")
    for r in results:
        c = r.config
        if not r.available:
            table.add_row(c.device, c.preset, c.impl, c.compile, c.amp, str(c.batch_size), "—", "—", "—", "—", "—",
                          r.note)
            continue
        ref = reference.get((c.device, c.preset))
        speedup = f"{r.samples_per_s / ref.samples_per_s:.2f}×" if ref and ref.samples_per_s else "—"
        first = f"{r.first_step_s:.1f}" if r.first_step_s is not None else "—"
        table.add_row(c.device, c.preset, c.impl, c.compile, c.amp, str(c.batch_size), f"{r.samples_per_s:.1f}",
                      f"{r.step_ms:.1f}", f"{r.step_ms_min:.0f}–{r.step_ms_max:.0f}", first,
                      f"{r.peak_memory_mb:.0f}", speedup)
    console().print(table)
    kinds = sorted({r.memory_kind for r in results if r.available})
    print("ms/step: median of the timed steps; 1st step: the first warm-up step (compiles when compiled)"
          + ("; peak memory: " + "; ".join(kinds) if kinds else ""))


def run(args: argparse.Namespace, command: str | None = None) -> int:
    """Run every configuration, print a table and optionally write JSON; returns an exit code."""
    from mmfuse.utils.io import atomic_write_text

    load_start = load_average()
    results = []
    for config in _configs(args):
        in_child = config.device == "cpu" and not args.in_process
        results.append(_measure_in_child(config) if in_child else measure(config))
    _print_table(results)
    if args.json is not None:
        environment = _environment()
        if load_start is not None:
            environment["load_avg"] = [load_start, load_average()]
        payload = {"benchmark": "model", "schema_version": SCHEMA_VERSION,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "command": command or command_line(),
                   "environment": environment, "results": [asdict(r) for r in results]}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None, *, invoked_as: str = "python benchmarks/model_bench.py") -> int:
    """Command-line entry point; ``invoked_as`` is recorded (with the options) as the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=invoked_as, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args, command=command_line(invoked_as, argv))
    except ValueError as exc:  # bad option values, an unavailable device
        parser.error(str(exc))
