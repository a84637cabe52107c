"""``mmfuse train`` → ``eval`` → ``predict`` round trip (in-process), resume, help texts and errors."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest
from PIL import Image
from radm_support import one_thread  # noqa: F401 - fixture
from train_support import TINY_OVERRIDES

from mmfuse.models.builder import resolve_model_config
from mmfuse.cli import build_parser, main
from mmfuse.core.config import load_config, save_config
from mmfuse.train import TrainingArguments, read_log

DATA = ["--dataset", "synthetic", "--data-opt", "train_size=48", "--data-opt", "dev_size=16",
        "--data-opt", "test_size=20", "--data-opt", "image_size=32"]


pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine: 1 thread is faster


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_eval_predict_round_trip(tmp_path, capsys):
    model_file = tmp_path / "tiny.yaml"  # a model config file instead of a preset name
    save_config(resolve_model_config("radm-tiny", **TINY_OVERRIDES), model_file)
    run = tmp_path / "run"
    argv = ["train", str(model_file), *DATA, "--data-opt", "tasks=[sentiment, match]", "--set", "dropout=0.0",
            "--output-dir", str(run), "--num-epochs", "2", "--batch-size", "8", "--learning-rate", "2e-3",
            "--logging-steps", "2", "--no-progress-bar", "--no-tensorboard", "--seed", "1"]
    summary = run_json(capsys, argv)
    assert summary["global_step"] == 12 and set(summary["metrics"]) >= {"sentiment/accuracy", "match/macro_f1"}
    # the heads were given the data set's tasks; run.yaml records the resolved run
    recorded = load_config(run / "run.yaml")
    assert recorded["model"]["heads"]["tasks"] == {"sentiment": 3, "match": 2}
    assert recorded["model"]["dropout"] == 0.0 and recorded["training"]["seed"] == 1
    assert recorded["dataset"]["options"]["train_size"] == 48

    evaluated = run_json(capsys, ["eval", str(run), "--output", str(tmp_path / "metrics.json")])
    assert evaluated["split"] == "test" and evaluated["num_samples"] == 20  # the data set from task.json
    assert json.loads((tmp_path / "metrics.json").read_text()) == evaluated
    dev = run_json(capsys, ["eval", str(run / "model"), "--split", "dev"])
    assert dev["metrics"] == pytest.approx(summary["metrics"])  # same model, same split as at the end of training

    red = tmp_path / "inputs" / "red.png"
    red.parent.mkdir()
    Image.new("RGB", (50, 40), (220, 40, 40)).save(red)
    (tmp_path / "inputs" / "broken.jpg").write_bytes(b"not an image")
    lines = [{"text": "look at this lovely circle", "image": "red.png"},
             {"id": "b", "text": "awful square", "image": str(red)},
             {"id": "c", "text": "plain triangle", "image": "broken.jpg"}]
    inputs = tmp_path / "inputs" / "in.jsonl"
    inputs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["predict", str(run), "--inputs", str(inputs)]) == 2  # one line naming the file, no traceback
    assert re.search(r"broken\.jpg.*input 'c'", capsys.readouterr().err)
    with pytest.warns(UserWarning, match="skipping 1 line"):
        assert main(["predict", str(run), "--inputs", str(inputs), "--on-bad-image", "skip",
                     "--output", str(tmp_path / "pred.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "b"]
    for row in rows:
        assert set(row["prediction"]) == {"sentiment", "match"}
        assert sum(row["probabilities"]["sentiment"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["prediction"]["match"] == max(row["probabilities"]["match"], key=row["probabilities"]["match"].get)

    assert main(["predict", str(run), "--split", "dev"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    accuracy = sum(r["prediction"]["sentiment"] == r["label"]["sentiment"] for r in rows) / len(rows)
    assert len(rows) == 16 and accuracy == pytest.approx(dev["metrics"]["sentiment/accuracy"])


def test_resume_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--output-dir", str(run), "--no-progress-bar", "--no-tensorboard", "--logging-steps", "1"]
    argv = ["train", "radm-tiny", *DATA, *[f"--set={k}={json.dumps(v)}" for k, v in TINY_OVERRIDES.items()],
            "--num-epochs", "2", "--batch-size", "16", "--eval-strategy", "epoch", *common]
    full = run_json(capsys, argv)
    losses = {r["step"]: r["loss"] for r in read_log(run, "train")}
    # forget the second epoch, then resume with only the output folder: settings come from run.yaml
    shutil.rmtree(run / "checkpoints" / "checkpoint-0000006")
    (run / "checkpoints" / "latest").write_text("checkpoint-0000003\n")
    resumed = run_json(capsys, ["train", "--resume", *common])
    assert resumed["global_step"] == 6 and resumed["metrics"] == full["metrics"]
    assert {r["step"]: r["loss"] for r in read_log(run, "train")} == losses


def test_help_lists_every_option(capsys):
    parser = build_parser()
    for command in ("train", "eval", "predict"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text and "--dataset" in text and "--data-opt" in text
        if command == "train":
            for field in dataclasses.fields(TrainingArguments):
                assert "--" + field.name.replace("_", "-") in text
            assert "--resume" in text and "--set" in text and "classification" in text
        else:
            assert "--batch-size" in text and "--output" in text and "--split" in text


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", "radm-tiny", "--output-dir", str(tmp_path)]) == 2
    assert "--dataset: required" in capsys.readouterr().err
    assert main(["train", "radm-tiny", "--dataset", "synthetc", "--output-dir", str(tmp_path)]) == 2
    assert "did you mean 'synthetic'" in capsys.readouterr().err
    assert main(["train", "radm-tiny", *DATA, "--data-opt", "oops", "--output-dir", str(tmp_path)]) == 2
    assert "--data-opt 'oops': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "radm-tiny", *DATA, "--task", "jmasa-typo", "--output-dir", str(tmp_path)]) == 2
    assert "unknown task 'jmasa-typo'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "holds a trained model" in capsys.readouterr().err
    assert main(["train", "--resume", "--output-dir", str(tmp_path / "empty"), *DATA]) == 2
    assert "MODEL: required" in capsys.readouterr().err
