"""DDP: two CPU processes on gloo via torch.distributed.run train in lock-step and evaluate exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, subprocess_env
from train_support import synthetic

from mmfuse.models.checkpoint import load_pretrained
from mmfuse.train import Trainer, TrainingArguments, read_log


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path):
    env = subprocess_env([str(REPO_ROOT / "tests")])
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(REPO_ROOT / "tests" / "ddp_train_worker.py"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"report_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    # DDP keeps the replicas identical: same weights on both ranks after training
    assert reports[0]["weights_sum"] == reports[1]["weights_sum"]
    assert reports[0]["weights_abs_sum"] == reports[1]["weights_abs_sum"]
    # every rank reports the metrics of the whole dev set, which it scored only half of
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert [r["dev_items_scored"] for r in reports] == [11, 10]

    # only rank 0 wrote: one log, checkpoints with both ranks' RNG states, the exported model
    train_records = read_log(tmp_path, "train")
    steps = [r["step"] for r in train_records]
    assert steps == list(range(1, 13))  # 96 items / 2 ranks / batch 12 = 4 steps per epoch, 3 epochs
    assert {"losses/sentiment", "losses/itc"} <= set(train_records[0])
    first, last = train_records[0]["loss"], min(r["loss"] for r in train_records[-3:])
    assert last < first, [r["loss"] for r in train_records]
    checkpoint = tmp_path / "checkpoints" / "checkpoint-0000012"
    assert (checkpoint / "rng_state_0.safetensors").is_file() and (checkpoint / "rng_state_1.safetensors").is_file()

    # the DDP metrics equal a single-process evaluation of the exported model on the same dev set
    torch.set_num_threads(1)
    model = load_pretrained(tmp_path / "model")
    args = TrainingArguments(output_dir=str(tmp_path / "eval"), progress_bar=False, tensorboard=False)
    single = Trainer(model, args, eval_dataset=synthetic("dev", 21)).evaluate()
    assert single == pytest.approx(reports[0]["metrics"])
