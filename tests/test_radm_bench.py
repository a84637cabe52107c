"""benchmarks/model_bench.py on a tiny configuration: the table, the JSON schema, option errors."""

from __future__ import annotations

import json
import shlex
import runpy
import sys

import pytest
import torch
from radm_support import one_thread  # noqa: F401 (fixture)

from mmfuse.bench.model import IMPLS, SCHEMA_VERSION
from mmfuse.ops import fused_kernel_available

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG_KEYS = {"device", "preset", "impl", "batch_size", "text_length", "amp", "steps", "warmup", "threads", "seed",
               "overrides", "compile"}
RESULT_KEYS = {"config", "available", "samples_per_s", "step_ms", "step_ms_min", "step_ms_max", "peak_memory_mb",
               "memory_kind", "final_loss", "first_step_s", "note"}
TINY = ["--device", "cpu", "--in-process", "--set", "image_encoder.img_size=32", "--batch-size", "2", "--steps", "2",
        "--warmup", "1", "--threads", "1", "--compile", "none"]


def run_script(repo_root, monkeypatch, *argv: str) -> int | str | None:
    """Run the script file itself (as ``python benchmarks/model_bench.py ...`` would), in process."""
    monkeypatch.setattr(sys, "argv", ["model_bench.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(repo_root / "benchmarks" / "model_bench.py"), run_name="__main__")
    return exit_info.value.code


def test_model_bench_prints_a_table_and_writes_json(repo_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.json"
    assert run_script(repo_root, monkeypatch, *TINY, "--json", str(out)) == 0
    printed = capsys.readouterr().out
    assert "RADM train step (forward + backward + AdamW)" in printed and f"wrote {out}" in printed
    payload = json.loads(out.read_text())
    assert set(payload) == {"benchmark", "schema_version", "created", "command", "environment", "results"}
    assert payload["benchmark"] == "model" and payload["schema_version"] == SCHEMA_VERSION
    assert payload["command"] == shlex.join(["python", "benchmarks/model_bench.py", *TINY, "--json", str(out)])
    assert {"torch", "python", "cpu", "cpu_name", "cpu_count", "extension", "fused_kernels", "git_commit",
            "git_dirty"} <= set(payload["environment"])
    results = payload["results"]
    assert [r["config"]["impl"] for r in results] == list(IMPLS)
    for result in results:
        assert set(result) == RESULT_KEYS and set(result["config"]) == CONFIG_KEYS
        config = result["config"]
        assert (config["device"], config["preset"], config["batch_size"], config["amp"]) == ("cpu", "radm-tiny", 2, "none")
        assert config["overrides"] == {"image_encoder.img_size": 32}
        if result["available"]:
            assert result["samples_per_s"] > 0 and result["peak_memory_mb"] > 0
            assert 0 < result["step_ms_min"] <= result["step_ms"] <= result["step_ms_max"]
            assert result["samples_per_s"] == pytest.approx(2 * 1000 / result["step_ms"])
            assert result["memory_kind"] == "process peak RSS" and result["final_loss"] > 0
        else:
            assert result["samples_per_s"] is None and result["note"]
    fused, reference = results
    assert reference["available"]
    assert fused["available"] == fused_kernel_available("cpu", torch.float32)
    if not fused["available"]:
        assert fused["note"] == "no compiled kernel for cpu/float32"


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps: expected a positive int, got 0"),
    (["--compile", "bogus"], "--compile: expected 'none' or a torch.compile backend"),
    (["--compile", "inductor", "--warmup", "0"], "--warmup: expected at least 1 with --compile"),
    (["--warmup", "-1"], "--warmup: expected an int >= 0, got -1"),
    (["--set", "fusion.n_layers"], "--set 'fusion.n_layers': expected KEY=VALUE"),
    pytest.param(["--device", "cuda"], "--device cuda: no CUDA device is available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")),
])
def test_model_bench_option_errors(repo_root, monkeypatch, capsys, argv, message):
    code = run_script(repo_root, monkeypatch, "--device", "cpu", *argv)
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_model_bench_compiled_rows(repo_root, tmp_path, monkeypatch, capsys):
    """--compile adds rows of the whole model under torch.compile (here Dynamo's eager backend,
    for time; the committed results use inductor), compared with the eager reference."""
    out = tmp_path / "bench.json"
    argv = [*TINY, "eager", "--impl", "reference", "--json", str(out)]  # --compile none eager
    assert run_script(repo_root, monkeypatch, *argv) == 0
    assert "the first warm-up step (compiles when compiled)" in capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert [(r["config"]["impl"], r["config"]["compile"]) for r in results] == [("reference", "none"),
                                                                                ("reference", "eager")]
    for r in results:
        assert r["available"] and r["first_step_s"] > 0 and r["final_loss"] > 0
    from mmfuse.bench.report import model_table

    table = model_table(json.loads(out.read_text()))
    assert "compile" in table.columns and table.rows[0][-1] == "1.00×"
