"""Console output: training / evaluation lines through the ``mmfuse`` logger, -v / -q, --no-progress-bar,
rich tables that fit the terminal, summaries without RST markup, and CLI errors naming the flag."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import subprocess_env
from radm_support import one_thread  # noqa: F401 - fixture
from train_support import TINY_OVERRIDES

from mmfuse.models.builder import resolve_model_config
from mmfuse.cli import main
from mmfuse.core.config import save_config

DATA = ["--dataset", "synthetic", "--data-opt", "train_size=48", "--data-opt", "dev_size=16",
        "--data-opt", "test_size=16", "--data-opt", "image_size=32"]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    save_config(resolve_model_config("radm-tiny", **TINY_OVERRIDES), path)
    return path


@pytest.mark.usefixtures("one_thread")
def test_training_without_a_bar_prints_progress_and_one_line_per_evaluation(tmp_path, capsys, tiny_config):
    run = tmp_path / "run"
    argv = ["train", str(tiny_config), *DATA, "--output-dir", str(run), "--num-epochs", "2", "--batch-size", "8",
            "--logging-steps", "3", "--no-progress-bar", "--no-tensorboard"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout stays pure JSON
    err = captured.err.splitlines()
    evals = [line for line in err if line.startswith("eval  step")]
    trains = [line for line in err if line.startswith("train step")]
    assert len(evals) == 2, captured.err  # eval_strategy "epoch": one line per evaluation
    assert re.match(r"eval  step 6/12 \(epoch 1\.00\): accuracy \d\.\d{4} · macro_f1 .* · loss \d\.\d{4} "
                    r"\| best macro_f1 \d\.\d{4}$", evals[0]), evals[0]
    assert len(trains) == 4 and trains[-1].startswith("train step 12/12 (epoch 2.00, 100%): loss ")
    assert "samples/s" in trains[0] and "left" in trains[0] and "sentiment/" not in evals[0]  # one task: means only
    final = [line for line in err if line.startswith("final model")]
    assert len(final) == 1 and f"accuracy {summary['metrics']['accuracy']:.4f}" in final[0]

    assert main(["-q", "eval", str(run), "--no-progress-bar"]) == 0  # -q: no info lines, JSON only
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["num_samples"] == 16
    assert main(["eval", str(run), "-q"]) == 0  # after the command too; the bar is on stderr
    captured = capsys.readouterr()
    assert json.loads(captured.out)["split"] == "test" and "eval" in captured.err


def test_eval_progress_bar_counts_batches(capsys):
    from train_support import synthetic, tiny_model

    from mmfuse.train import Trainer, TrainingArguments

    model = tiny_model()
    data = synthetic("dev", 20, image_size=32)
    trainer = Trainer(model, TrainingArguments(output_dir="unused", eval_batch_size=8, tensorboard=False),
                      eval_dataset=data)
    trainer.evaluate()
    err = capsys.readouterr().err
    # ceil(20 / 8) batches. The bar's total, not "3/3": tqdm redraws at most every 0.1 s and
    # leave=False clears it on close, so whether 100% is ever drawn depends on the machine's speed.
    assert re.search(r"eval: +\d+%.*\| [0-3]/3 \[", err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_errors_name_the_flag(tmp_path, capsys):
    for command in (["eval", str(tmp_path)], ["predict", str(tmp_path), "--split", "test"]):
        assert main([*command, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert f"mmfuse {command[0]}: error: {command[0]}: --device: 'cuda' requested but CUDA is not available" \
            in err, err
        assert "training.device" not in err


def _mmfuse(args: list[str], columns: int) -> str:
    env = subprocess_env()
    env["COLUMNS"] = str(columns)
    proc = subprocess.run([sys.executable, "-m", "mmfuse", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("columns", [70, 120])
def test_list_fits_the_terminal_and_has_no_rst_markup(columns):
    out = _mmfuse(["list"], columns)
    lines = [line for line in out.splitlines() if line.strip()]
    assert max(len(line) for line in lines) == columns  # as wide as COLUMNS says, never wider
    assert "``" not in out and ":class:" not in out
    assert any(re.match(r"│ encoder\s+│ hf-text\s+│ mmfuse.encoders\s+│ Text\b", line) for line in lines)


def test_summaries_drop_rst_markup():
    from mmfuse.utils.console import plain_text

    assert plain_text("Wraps ``transformers.AutoModel`` (see :class:`~mmfuse.models.radm.model.RADM`, "
                      ":func:`mmfuse.build_model`)") == "Wraps transformers.AutoModel (see RADM, mmfuse.build_model)"


def test_verbosity_flags_map_to_levels():
    import logging

    from mmfuse.utils.console import verbosity_from_flags

    assert [verbosity_from_flags(v, q) for v, q in ((0, 0), (1, 0), (0, 1), (0, 2), (3, 0), (0, 9))] == [
        logging.INFO, logging.DEBUG, logging.WARNING, logging.ERROR, logging.DEBUG, logging.CRITICAL]
