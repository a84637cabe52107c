"""benchmarks/jml_twitter2015.py: a thin driver over ``mmfuse train`` / ``mmfuse eval`` that runs a
run config for several seeds and writes per-seed and mean ± std results (a tiny model, a few tweets)."""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest
from jml_support import write_twitter_folder
from radm_support import one_thread  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

RUN_FILE = """\
model: jml-tiny-text
dataset: {name: twitter2015}
task: jmasa
training:
  batch_size: 3
  learning_rate: 3.0e-3
  param_groups: [{match: "encoders.text_encoder.*", learning_rate: 1.0e-3}]
  torch_threads: 1
  tensorboard: false
  num_epochs: 2
"""


@pytest.fixture
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("jml_twitter2015", repo_root / "benchmarks" / "jml_twitter2015.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_driver_runs_each_seed_through_the_cli_and_summarises(bench, tmp_path):
    data = write_twitter_folder(tmp_path / "twitter", {"train": range(6), "dev": [0, 2, 4], "test": [1, 3, 5]})
    config = tmp_path / "tiny.yaml"
    config.write_text(RUN_FILE, encoding="utf-8")
    out = tmp_path / "result.json"
    argv = ["--config", str(config), "--data-dir", str(data), "--seeds", "3", "4", "--runs-dir", str(tmp_path / "runs"),
            "--out", str(out)]
    result = bench.main(argv)
    assert json.loads(out.read_text()) == result
    assert result["seeds"] == [3, 4] and [r["seed"] for r in result["runs"]] == [3, 4]
    assert result["command"].startswith("python benchmarks/jml_twitter2015.py --config")
    assert {"git_commit", "machine", "run_config"} <= set(result) and result["run_config"] == RUN_FILE
    for run in result["runs"]:
        folder = tmp_path / "runs" / f"seed-{run['seed']}"
        assert (folder / "run.yaml").is_file()
        saved = json.loads((folder / "model" / "config.json").read_text())
        assert run["selected"]["decode_threshold"] == saved["decode_threshold"]
        assert run["selected"]["decode_length_penalty"] == saved["decode_length_penalty"]
        final = [json.loads(line) for line in (folder / "logs" / "train.jsonl").read_text().splitlines()
                 if '"final"' in line][-1]
        assert run["dev"]["joint_f1"] == round(100 * final["joint_f1"], 2)  # eval on dev = the trainer's choice
        assert run["test"]["n_gold"] == 5 and run["dev"]["n_gold"] == 7
    for split in ("dev", "test"):
        values = [r[split]["joint_f1"] for r in result["runs"]]
        assert result["summary"][split]["joint_f1"] == {"mean": round(statistics.fmean(values), 2),
                                                        "std": round(statistics.stdev(values), 2)}

    # --reuse reads finished seeds instead of training again
    again = bench.main([*argv, "--reuse"])
    assert again["summary"] == result["summary"] and all(r["train_and_eval_seconds"] is None for r in again["runs"])


def test_bad_arguments_are_refused(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--config", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2
    assert "--config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--data-dir", str(tmp_path), "--seeds", "1", "1"])
    assert "--seeds: repeated seeds" in capsys.readouterr().err
