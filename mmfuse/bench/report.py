"""Result tables of the benchmarks, for the terminal (rich) and for Markdown docs.

The same :class:`ResultTable` built from a benchmark's JSON is printed by the benchmark and
embedded in the docs, so the docs cannot drift from the committed results. A Markdown page
embeds a results file between two markers::

    <!-- bench-results: benchmarks/results/attn_bench_cpu-2core.json -->
    (generated: device, command, table, notes)
    <!-- /bench-results -->

``python -m mmfuse.bench.report benchmarks/results/*.json docs/performance.md`` regenerates
the table next to each JSON (``x.md``) and every such section of the page; ``--check`` only
lists what is stale (exit code 1), as the tests do.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]

SECTION = re.compile(
    r"(?P<begin><!-- bench-results: (?P<path>[^\s]+) -->\n)(?P<body>.*?)(?P<end><!-- /bench-results -->)",
    re.S,
)

NA = "n/a"
NONE = "—"


@dataclass
class ResultTable:
    """A table of strings plus the notes that explain it (footnotes, units, what was measured)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def fmt_num(x: float | None) -> str:
    """About three significant digits without scientific notation; ``—`` for missing values."""
    if x is None:
        return NONE
    ax = abs(x)
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _ratio(x: float | None) -> str:
    return NONE if x is None else f"{x:.2f}×"


# --------------------------------------------------------------------------------------------
# attn_bench


def attn_table(payload: dict[str, Any]) -> ResultTable:
    """Rows of ``attn_bench`` results: one per (shape, mode, implementation)."""
    config = payload["config"]
    env = payload["environment"]
    backward = bool(config["backward"])
    show_pct = env.get("peak_bandwidth_gbs") is not None
    passes = ("forward", "fwd_bwd") if backward else ("forward",)

    def both(row: dict[str, Any], fmt: Callable[[float | None], str], key: str) -> str:
        """``fwd / f+b`` values of one field of the row's passes."""
        return " / ".join(fmt(row[p][key]) if row.get(p) else NONE for p in passes)

    columns = ["shape", "mode", "impl", "fwd ms [IQR]"]
    if backward:
        columns.append("fwd+bwd ms [IQR]")
    suffix = " (fwd / f+b)" if backward else " (fwd)"
    columns += [name + suffix for name in ("min ms", "× eager", "× compile", "peak MiB", "GB/s")]
    if show_pct:
        columns.append("% of floor" + suffix)
    columns.append("compile s")

    rows: list[list[str]] = []
    row_notes: dict[tuple[str, str], list[str]] = {}  # (impl, note) -> the rows it applies to
    for r in payload["results"]:
        head = [r["shape"], r["mode"], r["impl"]]
        if r["note"]:
            row_notes.setdefault((r["impl"], r["note"]), []).append(f"{r['shape']} {r['mode']}")
        if not r["available"]:
            rows.append(head + [NA] * (len(columns) - len(head)))
            continue
        cells = [f"{fmt_num(r[p]['median_ms'])} [{fmt_num(r[p]['iqr_ms'])}]" for p in passes]
        cells += [both(r, fmt_num, "min_ms"), both(r, _ratio, "speedup_vs_eager"),
                  both(r, _ratio, "speedup_vs_compile"), both(r, fmt_num, "peak_mem_mib"),
                  both(r, fmt_num, "gb_per_s")]
        if show_pct:
            cells.append(both(r, fmt_num, "pct_of_floor"))
        cells.append(fmt_num(r["compile_s"]))
        rows.append(head + cells)

    n_rows = {impl: sum(r["impl"] == impl for r in payload["results"]) for impl, _ in row_notes}
    notes = [f"{impl} ({'all rows' if len(where) == n_rows[impl] else ', '.join(where)}): {note}"
             for (impl, note), where in row_notes.items()]
    dtype = config["dtype"]
    notes += [
        "shape = BxHxLxD (Lq = Lk = L, Dv = D), BxHxLqxLkxD or BxHxLqxLkxDxDv; times are the median "
        "[interquartile range] of "
        f"{config['repeats']} timed calls after {config['warmup']} warm-up calls; "
        "fwd runs without autograd, fwd+bwd is forward plus backward of both outputs.",
        "× eager / × compile = that implementation's median time divided by this row's "
        "(above 1 = this row is faster); compile s = first-call time of torch.compile "
        f"(excluded from the timings; inductor cache: {env.get('inductor_cache', 'not recorded')}).",
        f"peak MiB: {env['memory_kind']}.",
        "GB/s = the bytes the op must move (reads of q, k, v, prev, key_mask and writes of out, "
        "scores; backward adds reads of both output gradients and writes of the input gradients), "
        f"in {dtype}, divided by the median time"
        + (f"; % of floor = that rate over the device's {env['peak_bandwidth_gbs']:.0f} GB/s "
           f"({env['peak_bandwidth_source']})." if show_pct else "."),
    ]
    mask = "on" if config["mask"] else "off"
    title = f"gated_residual_attention on {env['device_name']} ({dtype}, key mask {mask})"
    return ResultTable(title=title, columns=columns, rows=rows, notes=notes)


def roofline_table(payload: dict[str, Any]) -> ResultTable | None:
    """Per (shape, mode, pass): the analytic floors and each implementation's % of the binding
    one (schema 2 results; None for older ones without a roofline)."""
    env = payload["environment"]
    peaks = env.get("roofline_peaks")
    if not peaks:
        return None
    by_case: dict[tuple[str, str, str], dict[str, Any]] = {}
    pct: dict[tuple[str, str, str], list[str]] = {}
    for r in payload["results"]:
        for name, roof in (r.get("roofline") or {}).items():
            key = (r["shape"], r["mode"], "fwd" if name == "forward" else "f+b")
            if r["impl"] != "sdpa" or key not in by_case:  # SDPA moves no scores: the op's floor first
                by_case.setdefault(key, roof)
            share = r[name].get("pct_of_binding_floor")
            if share is not None:
                label = "sdpa*" if r["impl"] == "sdpa" else r["impl"]
                pct.setdefault(key, []).append(f"{label} {share:.1f}")
    cpu = env["device"] == "cpu"
    # on CPU the "cuda-core" floor of the JSON is the one from the measured GEMM rate
    compute = "GEMM-rate floor ms" if cpu else "CUDA-core floor ms"
    columns = ["shape", "mode", "pass", "GFLOP", "MB", "bandwidth floor ms", "tensor-core floor ms",
               compute, "binding", "% of binding floor"]
    rows = []
    for key, roof in by_case.items():
        binding = roof["binding_floor"] or NONE
        rows.append([*key, fmt_num(roof["flops"] / 1e9), fmt_num(roof["bytes"] / 1e6),
                     fmt_num(roof["bandwidth_floor_ms"]), fmt_num(roof["tensor_core_floor_ms"]),
                     fmt_num(roof["cuda_core_floor_ms"]), "GEMM rate" if cpu and binding == "cuda-core" else binding,
                     ", ".join(pct.get(key, [])) or NONE])
    notes = [
        "Floors of an ideal kernel: bytes (as for GB/s) over the peak bandwidth; matrix-product FLOPs "
        "(2 per multiply-add: q.K^T and a.V forward; dA, dQ, dK, dV backward) over the tensor-core peak "
        "(16-bit inputs; the element-wise rest on CUDA cores); all FLOPs (plus ~8 forward, ~12 backward "
        "per score element) over the "
        + ("measured GEMM rate" if cpu else "FP32 CUDA-core peak")
        + ". The binding floor is the largest; % = floor / median time (100 = at the roofline).",
        f"Peaks: {fmt_num(peaks['bandwidth_gbs'])} GB/s ({peaks['bandwidth_source']}); "
        + (f"tensor cores {fmt_num(peaks['tensor_tflops'])} TFLOP/s, " if peaks.get("tensor_tflops") else "")
        + f"{'GEMM' if cpu else 'FP32'} {fmt_num(peaks['fp32_tflops'] * 1e3 if cpu else peaks['fp32_tflops'])} "
        + ("GFLOP/s" if cpu else "TFLOP/s") + f" ({peaks['compute_source']}).",
        "sdpa*: against its own, smaller floor (it returns no scores map and reads no prev).",
    ]
    return ResultTable(title=f"Roofline on {env['device_name']} ({payload['config']['dtype']})", columns=columns,
                       rows=rows, notes=notes)


def _load_text(env: dict[str, Any]) -> str:
    load = env.get("load_avg")
    return f", load average {load[0]:.1f} → {load[1]:.1f} (start → end)" if load else ""


def _commit_text(env: dict[str, Any]) -> str:
    commit = (env.get("git_commit") or "unknown")[:10]
    return commit + (" (+ uncommitted code changes)" if env.get("git_dirty") else "")


def attn_header(payload: dict[str, Any]) -> list[str]:
    env = payload["environment"]
    threads = f"{env['threads']} threads" if env["device"] == "cpu" else f"{env['cpu_count']} CPUs"
    if env.get("cpu_capability"):
        threads += f", kernels built for {env['cpu_capability']}"
    return [
        f"- Device: {env['device_name']} ({threads}{_load_text(env)}); torch {env['torch']}; "
        f"commit {_commit_text(env)}; {payload['created']}",
        f"- Command: `{payload['command']}`",
    ]


# --------------------------------------------------------------------------------------------
# model_bench (mmfuse/bench/model.py, schema_version 1 and 2; 2 adds compile and first_step_s)


def model_table(payload: dict[str, Any]) -> ResultTable:
    """Rows of ``model_bench`` results: one per (device, preset, attention implementation, compile)."""
    results = payload["results"]
    reference = {
        (r["config"]["device"], r["config"]["preset"]): r
        for r in results
        if r["config"]["impl"] == "reference" and r["config"].get("compile", "none") == "none" and r["available"]
    }
    with_compile = any(r["config"].get("compile", "none") != "none" for r in results)
    columns = ["device", "preset", "impl", *(["compile"] if with_compile else []), "amp", "batch", "samples/s",
               "ms/step", "min–max ms", *(["1st step s"] if with_compile else []), "peak MiB",
               "speed-up vs eager reference" if with_compile else "speed-up vs reference"]
    rows, notes = [], []
    for r in results:
        c = r["config"]
        head = [c["device"], c["preset"], c["impl"], *([c.get("compile", "none")] if with_compile else []), c["amp"],
                str(c["batch_size"])]
        if not r["available"]:
            rows.append(head + [NA] * (len(columns) - len(head)))
            notes.append(f"{c['impl']} on {c['device']}: {r['note']}")
            continue
        ref = reference.get((c["device"], c["preset"]))
        speedup = r["samples_per_s"] / ref["samples_per_s"] if ref and ref["samples_per_s"] else None
        rows.append(head + [
            fmt_num(r["samples_per_s"]), fmt_num(r["step_ms"]),
            f"{fmt_num(r['step_ms_min'])}–{fmt_num(r['step_ms_max'])}",
            *([fmt_num(r.get("first_step_s"))] if with_compile else []),
            fmt_num(r["peak_memory_mb"]), _ratio(speedup),
        ])
    kinds = sorted({r["memory_kind"] for r in results if r["available"]})
    notes.append("one step = forward + backward + AdamW update; ms/step is the median of the timed steps"
                 + (f"; peak memory: {'; '.join(kinds)}." if kinds else "."))
    if with_compile:
        notes.append("compile: torch.compile backend of the whole model (fullgraph; forward + loss, and the "
                     "backward through AOTAutograd; the optimizer step stays eager), none = eager; 1st step s: "
                     "the first warm-up step, which includes compiling.")
    return ResultTable(title="RADM training step", columns=columns, rows=rows, notes=notes)


def model_header(payload: dict[str, Any]) -> list[str]:
    env = payload["environment"]
    threads = f"{env.get('torch_default_threads')} threads{_load_text(env)}"
    device = env.get("cuda_device") or f"CPU {env.get('cpu_name') or env.get('cpu', '')} ({threads})"
    commit = f"commit {_commit_text(env)}; " if "git_commit" in env else ""  # older JSON has none
    lines = [f"- Device: {device}; torch {env['torch']}; {commit}{payload.get('created', 'date not recorded')}"]
    if payload.get("command"):
        lines.append(f"- Command: `{payload['command']}`")
    else:
        lines.append("- Command: not recorded in the JSON")
    return lines


# --------------------------------------------------------------------------------------------
# Rendering


RENDERERS = {"attn": (attn_header, attn_table), "model": (model_header, model_table)}


def _renderers(payload: dict[str, Any]):
    kind = payload.get("benchmark")
    if kind not in RENDERERS:
        raise ValueError(f"benchmark: expected one of {sorted(RENDERERS)} in the results JSON, got {kind!r}")
    return RENDERERS[kind]


def result_table(payload: dict[str, Any]) -> ResultTable:
    """The table of a benchmark's results JSON (``attn`` or ``model``)."""
    return _renderers(payload)[1](payload)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: ResultTable) -> str:
    """A GitHub-flavoured Markdown table followed by its notes as a bullet list."""
    lines = [
        "| " + " | ".join(_md_cell(c) for c in table.columns) + " |",
        "|" + "|".join("---" for _ in table.columns) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    if table.notes:
        lines.append("")
        lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def print_table(table: ResultTable, width: int | None = None) -> None:
    """Print with rich, notes below the table; as wide as the terminal (``COLUMNS``) unless ``width``."""
    from rich.table import Table

    from mmfuse.utils.console import console as make_console

    out = Table(title=table.title)
    for i, column in enumerate(table.columns):
        out.add_column(column, justify="left" if i < 3 else "right")
    for row in table.rows:
        out.add_row(*row)
    console = make_console(width=width)
    console.print(out)
    for note in table.notes:
        console.print(f"- {note}", highlight=False, markup=False)


def results_markdown(payload: dict[str, Any]) -> str:
    """Header (device, command) + table + notes of one results JSON, as Markdown."""
    header, table = _renderers(payload)
    text = "\n".join(header(payload)) + "\n\n" + to_markdown(table(payload))
    roof = roofline_table(payload) if payload.get("benchmark") == "attn" else None
    if roof is not None:
        text += "\n" + to_markdown(roof)
    return text


def section_body(json_path: str, root: Path = REPO_ROOT) -> str:
    """The generated body of a docs section for ``json_path`` (relative to ``root``)."""
    path = root / json_path
    if not path.is_file():
        return (f"_No results committed yet: `{json_path}` does not exist. Run the benchmark with "
                f"`--json {json_path}`, then `python -m mmfuse.bench.report {json_path} <this page>`._\n")
    return results_markdown(json.loads(path.read_text(encoding="utf-8")))


def update_markdown(text: str, root: Path = REPO_ROOT) -> str:
    """``text`` with every bench-results section regenerated from its JSON."""
    return SECTION.sub(lambda m: m["begin"] + section_body(m["path"], root) + m["end"], text)


def stale_outputs(paths: Sequence[Path], root: Path = REPO_ROOT) -> dict[Path, str]:
    """``{file: its up-to-date text}`` for every file that differs from what the JSON gives.

    A ``.json`` path stands for the Markdown table next to it (``x.json`` → ``x.md``); a ``.md``
    path is a page whose bench-results sections are regenerated.
    """
    stale = {}
    for path in paths:
        if path.suffix == ".json":
            target = path.with_suffix(".md")
            new = results_markdown(json.loads(path.read_text(encoding="utf-8")))
        else:
            target = path
            text = path.read_text(encoding="utf-8")
            if not SECTION.search(text):
                raise ValueError(f"{path}: no '<!-- bench-results: PATH -->' … '<!-- /bench-results -->' "
                                 "section")
            new = update_markdown(text, root)
        if not target.is_file() or target.read_text(encoding="utf-8") != new:
            stale[target] = new
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmfuse.bench.report",
        description="Regenerate Markdown from benchmark results: x.json → its table x.md; "
        "page.md → its bench-results sections.")
    parser.add_argument("paths", nargs="+", type=Path, help="results JSON files and/or Markdown pages")
    parser.add_argument("--check", action="store_true", help="only list stale files (exit code 1 if any)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT,
                        help="folder the JSON paths in pages are relative to (default: the repository)")
    args = parser.parse_args(argv)
    from mmfuse.utils.io import atomic_write_text

    try:
        stale = stale_outputs(args.paths, args.root)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    for target, text in stale.items():
        if not args.check:
            atomic_write_text(target, text)
        print(f"{target}: {'stale' if args.check else 'updated'}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
