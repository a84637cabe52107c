"""``mmfuse bench``: the attention benchmark end to end on a tiny shape, its pieces, the report.

The run excludes torch.compile (compiling takes longer than this file's budget); the real
benchmark runs exercise it. Numbers are checked for shape and sanity, never for speed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import REPO_ROOT

from mmfuse.bench import report
from mmfuse.bench.attn import (
    AttnShape,
    Peaks,
    floor_bytes,
    matmul_flops,
    peak_bandwidth_for,
    peak_compute_for,
    peak_extra_bytes,
    roofline,
)
from mmfuse.cli import main
from mmfuse.cli.bench_cmd import BENCHMARKS, load_benchmark
from mmfuse.ops import fused_kernel_available

PASS_FIELDS = {"median_ms", "q25_ms", "q75_ms", "iqr_ms", "min_ms", "peak_mem_mib", "floor_bytes", "gb_per_s",
               "pct_of_floor", "speedup_vs_eager", "speedup_vs_compile", "flops", "binding_floor",
               "binding_floor_ms", "pct_of_binding_floor"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One CLI run: shape 2x2x8x4 with Lk=12 and Dv=3, modes none and gated, no torch.compile."""
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "attn", "--device", "cpu", "--dtype", "float64", "--shapes", "2x2x8x12x4x3",
            "--modes", "none,gated", "--impls", "fused,eager,sdpa", "--repeats", "3", "--warmup", "1",
            "--json", str(out / "attn.json"), "--markdown", str(out / "attn.md")]
    code = main(argv)
    payload = json.loads((out / "attn.json").read_text())
    return code, argv, payload, (out / "attn.md").read_text()


def test_attn_bench_cli_writes_complete_json(tiny_run):
    code, argv, payload, _ = tiny_run
    assert code == 0
    assert payload["benchmark"] == "attn" and payload["schema_version"] == 2
    assert payload["command"].startswith("mmfuse bench attn --device cpu")
    env = payload["environment"]
    assert env["device"] == "cpu" and env["device_name"].startswith("CPU")
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert env["peak_bandwidth_gbs"] is None and "profiler" in env["memory_kind"]
    peaks = env["roofline_peaks"]
    assert peaks["bandwidth_gbs"] > 0 and peaks["fp32_tflops"] > 0 and "measured" in peaks["compute_source"]
    assert payload["config"]["shapes"] == ["2x2x8x12x4x3"] and payload["config"]["backward"] is True

    rows = {(r["mode"], r["impl"]): r for r in payload["results"]}
    # SDPA only for mode none; one row per (mode, impl) otherwise
    assert set(rows) == {("none", "fused"), ("none", "eager"), ("none", "sdpa"),
                         ("gated", "fused"), ("gated", "eager")}
    fused_here = fused_kernel_available("cpu", torch.float64)
    for (mode, impl), r in rows.items():
        assert (r["B"], r["H"], r["Lq"], r["Lk"], r["D"], r["Dv"]) == (2, 2, 8, 12, 4, 3)
        if impl == "fused" and not fused_here:
            assert not r["available"] and "no compiled mmfuse kernel for cpu/float64" in r["note"]
            assert r["forward"] is None and r["fwd_bwd"] is None
            continue
        assert r["available"] and r["matches_eager"] is True, r["note"]
        assert r["max_abs_diff_vs_eager"] < 1e-9
        for name in ("forward", "fwd_bwd"):
            t = r[name]
            assert set(t) == PASS_FIELDS
            for key in ("median_ms", "min_ms", "gb_per_s", "peak_mem_mib"):
                assert math.isfinite(t[key]) and t[key] > 0, (impl, mode, name, key, t[key])
            assert t["min_ms"] <= t["q25_ms"] <= t["median_ms"] <= t["q75_ms"]
            assert t["iqr_ms"] == pytest.approx(t["q75_ms"] - t["q25_ms"])
            assert t["pct_of_floor"] is None
            assert t["gb_per_s"] == pytest.approx(t["floor_bytes"] / (t["median_ms"] / 1e3) / 1e9)
            # CPU roofline: measured copy bandwidth and GEMM rate; % of the binding floor
            assert t["binding_floor"] in ("bandwidth", "cuda-core")
            assert t["pct_of_binding_floor"] == pytest.approx(100 * t["binding_floor_ms"] / t["median_ms"])
            assert r["roofline"][name]["bytes"] == t["floor_bytes"]
        speedup = r["forward"]["speedup_vs_eager"]
        if impl == "eager":
            assert speedup is None
        else:
            eager_ms = rows[(mode, "eager")]["forward"]["median_ms"]
            assert speedup == pytest.approx(eager_ms / r["forward"]["median_ms"])
    # the eager fwd+bwd of mode none keeps out, scores and the three input gradients alive at least
    alive = 8 * (2 * 2 * 8 * (3 + 12) + 2 * 2 * (8 + 12) * 4)
    assert rows[("none", "eager")]["fwd_bwd"]["peak_mem_mib"] * 2**20 >= alive


def test_attn_bench_markdown_is_the_report_of_the_json(tiny_run):
    _, _, payload, markdown = tiny_run
    assert markdown == report.results_markdown(payload)
    assert "| 2x2x8x12x4x3 | gated | eager |" in markdown
    assert "`mmfuse bench attn --device cpu" in markdown


def test_floor_bytes_matches_the_contract_example():
    # contract: B=32, H=12, L=256, D=64 in bf16, forward of the gated op ≈ 151 MB
    shape = AttnShape.parse("32x12x256x64")
    gated = floor_bytes(shape, "gated", "fused", 2, mask=False, backward=False)
    assert gated == 4 * 32 * 12 * 256 * 64 * 2 + 2 * 32 * 12 * 256 * 256 * 2
    assert gated == pytest.approx(151e6, rel=0.001)
    # mode none reads no prev; SDPA writes no scores; the key mask is one byte per key
    none = floor_bytes(shape, "none", "fused", 2, mask=True, backward=False)
    assert none == 4 * 32 * 12 * 256 * 64 * 2 + 32 * 12 * 256 * 256 * 2 + 32 * 256
    assert floor_bytes(shape, "none", "sdpa", 2, mask=True, backward=False) == none - 32 * 12 * 256 * 256 * 2
    # backward: + reads of q, k, v, grad_out, grad_scores, prev, mask and writes of 3 grads + grad_prev
    fwd = floor_bytes(shape, "gated", "fused", 2, mask=True, backward=False)
    both = floor_bytes(shape, "gated", "fused", 2, mask=True, backward=True)
    assert both - fwd == 7 * 32 * 12 * 256 * 64 * 2 + 3 * 32 * 12 * 256 * 256 * 2 + 32 * 256


def test_roofline_of_the_contract_example_on_h100():
    """bf16 32x12x256x64 gated forward: 6.4 GFLOP of matrix products, ~151 MB; on an H100 the
    bandwidth floor (45 us) binds over tensor cores (6.5 us) but not over FP32 CUDA cores (>96 us)."""
    shape = AttnShape.parse("32x12x256x64")
    assert matmul_flops(shape, backward=False) == 2 * 2 * 32 * 12 * 256 * 256 * 64
    assert matmul_flops(shape, backward=True) == 3 * matmul_flops(shape, backward=False)
    tc, tf32, fp32, label = peak_compute_for("NVIDIA H100 80GB HBM3")
    assert (tc, fp32, label) == (989.0, 67.0, "H100 SXM")
    peaks = Peaks(3350.0, "table", tc, tf32, fp32, "table")
    roof = roofline(shape, "gated", "fused", torch.bfloat16, False, False, peaks, "cuda")
    assert roof["bandwidth_floor_ms"] == pytest.approx(0.0451, rel=0.01)
    assert roof["tensor_core_floor_ms"] < 0.01 < 0.096 < roof["cuda_core_floor_ms"]
    assert roof["binding_floor"] == "bandwidth" and roof["binding_floor_ms"] == roof["bandwidth_floor_ms"]
    # float32 without TF32: CUDA cores only, and they bind
    roof32 = roofline(shape, "gated", "fused", torch.float32, False, False, peaks, "cuda")
    assert roof32["tensor_core_floor_ms"] is None and roof32["binding_floor"] == "cuda-core"
    assert peak_compute_for("NVIDIA H200")[3] == "H200" and peak_compute_for("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert peak_compute_for("Some Future GPU") is None


@pytest.mark.parametrize(("text", "dims", "canonical"), [
    ("8x8x128x64", (8, 8, 128, 128, 64, 64), "8x8x128x64"),
    ("2X4x16x32x8", (2, 4, 16, 32, 8, 8), "2x4x16x32x8"),
    (" 1x2x3x4x5x6 ", (1, 2, 3, 4, 5, 6), "1x2x3x4x5x6"),
    ("1x2x3x3x5x6", (1, 2, 3, 3, 5, 6), "1x2x3x3x5x6"),
])
def test_shape_parse_round_trips(text, dims, canonical):
    shape = AttnShape.parse(text)
    assert (shape.B, shape.H, shape.Lq, shape.Lk, shape.D, shape.Dv) == dims
    assert str(shape) == canonical and AttnShape.parse(str(shape)) == shape


@pytest.mark.parametrize("text", ["8x8x128", "8x8x128x64x1x2x3", "8x0x128x64", "8x8xLx64", ""])
def test_shape_parse_rejects(text):
    with pytest.raises(ValueError, match="--shapes: expected BxHxLxD"):
        AttnShape.parse(text)


@pytest.mark.parametrize(("argv", "message"), [
    (["--shapes", "8x8x128"], "--shapes: expected BxHxLxD"),
    (["--modes", "none,fancy"], "--modes: expected a comma-separated subset of none,residual,gated"),
    (["--impls", "flash"], "--impls: expected a comma-separated subset of fused,eager,compile,sdpa"),
    (["--repeats", "0"], "--repeats: expected a positive int"),
    (["--peak-bandwidth", "-5"], "--peak-bandwidth: expected a positive number"),
    (["--peak-tensor-tflops", "0"], "--peak-tensor-tflops: expected a positive number of TFLOP/s"),
    (["--device", "tpu"], "--device: expected cpu, cuda, cuda:N or auto"),
])
def test_bad_options_exit_2_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "attn", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("name", "gbs"), [
    ("NVIDIA H100 80GB HBM3", 3350), ("NVIDIA H100 PCIe", 2000), ("NVIDIA H100 NVL", 3900),
    ("NVIDIA H200", 4800),
    ("NVIDIA A100-SXM4-80GB", 2039), ("NVIDIA A100 80GB PCIe", 1935), ("NVIDIA A100-SXM4-40GB", 1555),
    ("NVIDIA L4", 300), ("NVIDIA L40S", 864), ("NVIDIA GH200 480GB", 4000),
])
def test_peak_bandwidth_table(name, gbs):
    assert peak_bandwidth_for(name)[0] == gbs


def test_peak_bandwidth_unknown_gpu():
    assert peak_bandwidth_for("Some Future GPU") is None


def test_cpu_peak_memory_counts_live_allocations_not_their_sum():
    mib = 2**20

    def sequential():  # two 4 MiB buffers, never alive together
        for _ in range(2):
            torch.empty(mib, dtype=torch.float32).fill_(1.0)

    def together():  # two 4 MiB buffers alive at once
        a = torch.empty(mib, dtype=torch.float32)
        b = torch.empty(mib, dtype=torch.float32)
        return a, b

    cpu = torch.device("cpu")
    assert 4 * mib <= peak_extra_bytes(sequential, cpu) < 5 * mib
    assert 8 * mib <= peak_extra_bytes(together, cpu) < 9 * mib


def test_bench_model_is_wired_to_the_model_benchmark():
    import mmfuse.bench.model as model_bench

    assert BENCHMARKS["model"][0] == "mmfuse.bench.model"
    assert callable(model_bench.main) and callable(load_benchmark("model"))


def test_missing_benchmark_module_gives_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(BENCHMARKS, "model", ("mmfuse.bench.not_there", {}, "absent"))
    assert main(["bench", "model", "--help"]) == 2
    err = capsys.readouterr().err
    assert "mmfuse.bench.not_there is not part of this installation" in err
    assert "mmfuse/bench/not_there.py is missing" in err


def test_docs_and_result_tables_match_committed_results():
    page = REPO_ROOT / "docs" / "performance.md"
    sections = report.SECTION.findall(page.read_text(encoding="utf-8"))
    assert sections, "docs/performance.md has no bench-results sections"
    results = sorted((REPO_ROOT / "benchmarks" / "results").glob("attn_bench_*.json"))
    assert results, "no attn_bench results committed under benchmarks/results/"
    stale = report.stale_outputs([*results, page])
    assert not stale, (f"stale: {sorted(str(p) for p in stale)}; run "
                       "`python -m mmfuse.bench.report benchmarks/results/*.json docs/performance.md`")


def test_report_cli_rewrites_stale_tables(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    source = REPO_ROOT / "benchmarks" / "results" / "attn_bench_cpu-2core.json"
    result = tmp_path / "results" / "attn.json"
    result.write_text(source.read_text())
    page = tmp_path / "page.md"
    begin, end = "<!-- bench-results: results/attn.json -->\n", "<!-- /bench-results -->\n"
    page.write_text(f"intro\n{begin}old table\n{end}end\n")
    argv = [str(result), str(page), "--root", str(tmp_path)]
    assert report.main([*argv, "--check"]) == 1
    assert report.main(argv) == 0
    assert report.main([*argv, "--check"]) == 0
    expected = report.results_markdown(json.loads(source.read_text()))
    assert (tmp_path / "results" / "attn.md").read_text() == expected
    assert page.read_text() == f"intro\n{begin}{expected}{end}end\n"
