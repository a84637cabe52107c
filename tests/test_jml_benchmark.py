"""benchmarks/jml_twitter2015.py end to end on a few real Twitter-2015 tweets with a tiny local BERT:
it trains, selects the decoding on dev from its grid and writes a complete results JSON."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from radm_support import TINY_BERT, no_network, one_thread  # noqa: F401 (fixtures)

import mmfuse

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread", "no_network")]


@pytest.fixture
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("jml_twitter2015", repo_root / "benchmarks" / "jml_twitter2015.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_bert_dir(tmp_path):
    torch.manual_seed(0)
    encoder = mmfuse.build_component("encoder", {"name": "hf-text", "config": TINY_BERT, "max_length": 32})
    folder = tmp_path / "tiny-bert"
    encoder.model.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    return folder


def test_benchmark_runs_and_reports_the_dev_selected_decoding(bench, tiny_bert_dir, shared_data, tmp_path):
    out = tmp_path / "result.json"
    result = bench.main(["--model-dir", str(tiny_bert_dir), "--data-dir", str(shared_data / "twitter2015"),
                         "--limit", "12", "--epochs", "2", "--max-length", "32", "--threads", "1",
                         "--length-penalties", "0,1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert result["sizes"]["dev"]["tweets"] == 12 and result["sizes"]["test"]["tweets"] == 12
    selected = result["selected"]
    assert selected["epoch"] in (1, 2) and selected["length_penalty"] in (0.0, 1.0)
    assert selected["threshold"] is None or selected["threshold"] in bench.THRESHOLDS
    best_dev = max(h["dev"]["joint_f1"] for h in result["history"])
    assert result["dev"]["joint_f1"] == best_dev  # the reported dev score is the selected epoch's
    for split in ("dev", "test"):
        metrics = result[split]
        assert metrics["n_gold"] == result["sizes"][split]["aspects"]
        assert all(0.0 <= metrics[k] <= 100.0 for k in ("joint_f1", "mate_f1", "masc_acc"))
        assert metrics["joint_f1"] <= metrics["mate_f1"]  # a joint hit is a span hit


def test_decoding_grid_picks_the_best_setting(bench):
    gold = [[(0, 0, 1)], [(2, 3, 0)]]
    predictions = {(-math.inf, 0.0): [[(0, 0, 1)], []], (1.0, 1.0): [[(0, 0, 1)], [(2, 3, 0)]]}
    setting, metrics = bench.best_decoding(gold, predictions)
    assert setting == (1.0, 1.0) and metrics["joint_f1"] == 1.0


def test_bad_penalty_list_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--model-dir", "x", "--length-penalties", "0,-1"])
    assert exit_info.value.code == 2
    assert "--length-penalties" in capsys.readouterr().err
