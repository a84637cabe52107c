"""Training runs that cannot be hijacked, poisoned or mixed up.

No pickles are read; a non-finite loss stops (or skips) and NaN weights are never written;
logs are always valid JSON; one run per output folder (lock, stale locks, overwrite); a refused
resume changes nothing; SIGINT / SIGTERM checkpoint and exit 130 / 143; full disks name the path.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, subprocess_env
from radm_support import one_thread  # noqa: F401 - fixture
from train_support import TINY_OVERRIDES, synthetic, tiny_model

from mmfuse.models.builder import resolve_model_config
from mmfuse.models.checkpoint import CheckpointError, load_pretrained, save_pretrained
from mmfuse.cli import main
from mmfuse.core.config import ConfigError, save_config
from mmfuse.train import Trainer, TrainerCallback, TrainingArguments, read_log
from mmfuse.train import checkpointing as ckpt
from mmfuse.train.guards import NonFiniteLossError
from mmfuse.train.logs import RunLogger
from mmfuse.train.run_dir import LOCK_NAME, OutputDirError, RunDirLock
from mmfuse.utils.io import WriteError, atomic_write_with
from mmfuse.utils.state_io import StateFileError, load_state, save_state

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = ["--dataset", "synthetic", "--data-opt", "train_size=16", "--data-opt", "dev_size=8",
        "--data-opt", "test_size=8", "--data-opt", "image_size=32"]


def the_error(stderr: str) -> str:
    """The one error line of a failed command (progress / log lines on stderr are not errors)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("mmfuse ") and ": error: " in line]
    assert len(errors) == 1, stderr
    return errors[0]


def args_for(output_dir: Path, **changes) -> TrainingArguments:
    values = dict(output_dir=str(output_dir), num_epochs=1, batch_size=8, learning_rate=2e-3, eval_strategy="no",
                  logging_steps=1, progress_bar=False, tensorboard=False, seed=3)
    return TrainingArguments(**{**values, **changes})


def strict_json_lines(path: Path) -> list[dict]:
    """Parse a JSONL file refusing the non-standard NaN / Infinity tokens."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{path}: non-standard JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.yaml"
    save_config(resolve_model_config("radm-tiny", **TINY_OVERRIDES), path)
    return path


def train_cli(model_file: Path, output_dir: Path, *extra: str) -> int:
    return main(["train", str(model_file), *DATA, "--output-dir", str(output_dir), "--num-epochs", "1",
                 "--batch-size", "8", "--no-progress-bar", "--no-tensorboard", "--logging-steps", "1", *extra])


# ---------------------------------------------------------------------------------------------
# nothing is unpickled
# ---------------------------------------------------------------------------------------------
def test_the_package_never_unpickles():
    """No module imports pickle-based loaders or calls torch.load / np.load / pickle (source scan)."""
    forbidden_calls = {("torch", "load"), ("np", "load"), ("numpy", "load"), ("pickle", "load"),
                       ("pickle", "loads"), ("dill", "load"), ("joblib", "load")}
    offenders = []
    for path in (REPO_ROOT / "mmfuse").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(REPO_ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") for n in names):
                    offenders.append(where)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                base = node.func.value
                if isinstance(base, ast.Name) and (base.id, node.func.attr) in forbidden_calls:
                    offenders.append(where)
            if isinstance(node, ast.keyword) and node.arg in ("weights_only", "allow_pickle"):
                offenders.append(where)
    assert not offenders, offenders


class _Payload:
    """Unpickling this creates a marker file: the attack the issue reproduced."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_hostile_pickles_in_a_checkpoint_are_never_loaded(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train()
    checkpoint = ckpt.find_latest_checkpoint(run / "checkpoints")
    assert sorted(p.name for p in checkpoint.iterdir() if p.suffix == ".pt") == []  # no pickles written
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Payload(marker))
    for name in ("rng_state_0.pt", "optimizer.pt", "scheduler.pt"):  # where older versions kept pickles
        (checkpoint / name).write_bytes(payload)
    (checkpoint / "rng_state_0.safetensors").write_bytes(payload)  # a pickle under the new name
    with pytest.raises(StateFileError, match=r"rng_state_0\.safetensors: not a readable safetensors file"):
        Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train(resume_from_checkpoint=True)
    for name in ("optimizer.safetensors", "scheduler.safetensors", "rng_state_0.safetensors"):
        (checkpoint / name).unlink()
    (checkpoint / "optimizer.safetensors").write_bytes(payload)
    with pytest.raises(StateFileError, match=r"optimizer\.safetensors"):
        Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train(resume_from_checkpoint=checkpoint)
    (checkpoint / "optimizer.safetensors").unlink()
    legacy = tmp_path / "legacy"  # an old-style checkpoint with only pickled states is refused by name
    legacy.mkdir()
    for f in checkpoint.iterdir():
        (legacy / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CheckpointError, match="never loads"):
        ckpt.check_not_legacy(legacy)
    assert not marker.exists()


def test_state_files_round_trip_and_name_the_file_when_damaged(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": ckpt.capture_rng_state(), "nan": float("nan"),
             "keys": {1: "int key", "s": (1, 2.5, None, True)}}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["keys"] == state["keys"] and back["nan"] != back["nan"]
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    ckpt.restore_rng_state(back["rng"])
    a = torch.rand(3)
    ckpt.restore_rng_state(state["rng"])
    assert torch.equal(a, torch.rand(3))
    data = (tmp_path / "s.safetensors").read_bytes()
    for name, content in (("empty", b""), ("truncated", data[: len(data) // 2]), ("garbled", b"\x07" * 64)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(StateFileError, match=name):
            load_state(tmp_path / name)
    with pytest.raises(TypeError, match="without pickle"):
        save_state(tmp_path / "x.safetensors", {"f": object()})


# ---------------------------------------------------------------------------------------------
# non-finite losses, gradients and weights
# ---------------------------------------------------------------------------------------------
def nan_on_calls(model: torch.nn.Module, calls: set[int]) -> torch.nn.Module:
    """Make the training forward passes numbered ``calls`` (1-based) return a NaN loss."""
    forward, count = model.forward, [0]

    def poisoned(batch):
        output = forward(batch)
        if model.training:
            count[0] += 1
            if count[0] in calls:
                output.loss = output.loss * float("nan")
        return output

    model.forward = poisoned
    return model


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = args_for(run, num_epochs=3, save_steps=2, eval_strategy="epoch")
    with pytest.raises(NonFiniteLossError, match=r"the loss is nan at step 3 .*checkpoint-0000002") as info:
        Trainer(nan_on_calls(tiny_model(), {3}), args, synthetic("train", 16), synthetic("dev", 8)).train()
    assert info.value.step == 3
    assert not (run / "model").exists()  # nothing exported
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["checkpoint-0000002"]
    load_pretrained(run / "checkpoints" / "checkpoint-0000002")  # finite, loadable
    records = strict_json_lines(run / "logs" / "train.jsonl")
    stop = [r for r in records if r.get("event") == "nonfinite_loss_stop"]
    assert stop and stop[0]["step"] == 3 and stop[0]["loss"] is None  # NaN written as null


def test_a_diverging_run_never_exports_nan_and_logs_stay_json(tmp_path):
    run = tmp_path / "run"
    args = args_for(run, num_epochs=2, learning_rate=1e6, eval_strategy="epoch", warmup_ratio=0.0)
    with pytest.raises(NonFiniteLossError, match=r"step \d+"):
        Trainer(tiny_model(), args, synthetic("train", 16), synthetic("dev", 8)).train()
    assert not (run / "model").exists()
    strict_json_lines(run / "logs" / "train.jsonl")
    for checkpoint in ckpt.list_checkpoints(run / "checkpoints"):
        load_pretrained(checkpoint)  # every checkpoint written is finite


def test_skip_mode_skips_the_update_and_counts_it(tmp_path):
    run = tmp_path / "run"
    model = nan_on_calls(tiny_model(), {2})
    before = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, trainer, state):
            before[state.global_step] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    args = args_for(run, num_epochs=2, on_nonfinite_loss="skip")
    out = Trainer(model, args, synthetic("train", 16), callbacks=[Snapshot()]).train()
    assert out.global_step == 4
    assert all(torch.equal(before[1][k], before[2][k]) for k in before[1])  # step 2 changed nothing
    assert not all(torch.equal(before[2][k], before[3][k]) for k in before[2])  # step 3 trained again
    records = strict_json_lines(run / "logs" / "train.jsonl")
    assert [r["step"] for r in records if r.get("event") == "nonfinite_step_skipped"] == [2]
    train = {r["step"]: r for r in records if r["type"] == "train"}
    assert train[2]["loss"] is None and train[4]["skipped_steps"] == 1 and train[3]["loss"] > 0
    load_pretrained(run / "model")
    with pytest.raises(ConfigError, match="on_nonfinite_loss"):
        TrainingArguments(on_nonfinite_loss="ignore")


def test_nan_weights_are_refused_at_load_and_eval(tmp_path, capsys):
    model = tiny_model()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_pretrained(model, tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"model\.safetensors'?: 1 tensor\(s\) hold NaN"):
        load_pretrained(tmp_path / "m")
    ckpt.write_json(tmp_path / "m" / "task.json", {"task": "classification",
                                                    "labels": {"tasks": {"sentiment": ["a", "b", "c"]}}})
    assert main(["eval", str(tmp_path / "m"), "--dataset", "synthetic", "--data-opt", "test_size=4"]) == 2
    err = the_error(capsys.readouterr().err)
    assert "NaN" in err and "model.safetensors" in err


def test_json_logs_are_standard_json_and_survive_a_cut_line(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log("train", 1, {"loss": float("nan"), "grad_norm": float("inf"), "t": torch.tensor(float("-inf"))})
    logger.close()
    path = tmp_path / "logs" / "train.jsonl"
    with open(path, "a") as fh:
        fh.write('{"type": "train", "step": 2, "lo')  # killed mid-write
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log("train", 3, {"loss": 1.0})
    logger.close()
    assert strict_json_lines(path) == [{"type": "train", "step": 1, "loss": None, "grad_norm": None, "t": None},
                                       {"type": "train", "step": 3, "loss": 1.0}]
    path.write_text('{"type": "train", "step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"train\.jsonl'?: line 2 is not valid JSON"):
        read_log(tmp_path)


# ---------------------------------------------------------------------------------------------
# one run per output folder
# ---------------------------------------------------------------------------------------------
HOLD_LOCK = """
import sys, time
from mmfuse.train.run_dir import RunDirLock
lock = RunDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_is_refused_while_the_first_holds_the_folder_and_stale_locks_are_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True,
                              env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirError, match=rf"in use by another mmfuse run \(pid {holder.pid} on "):
            Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train()
        assert not (run / "logs").exists()  # the refused run wrote nothing
    finally:
        holder.kill()  # kill -9: the kernel drops the lock, the holder record stays behind
        holder.wait()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == holder.pid
    Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train()
    stale = [r for r in read_log(run, "info") if r.get("event") == "stale_lock"]
    assert stale and stale[0]["previous_run"]["pid"] == holder.pid
    assert (run / LOCK_NAME).read_text() == ""  # released cleanly
    with RunDirLock(run) as lock:
        assert lock.stale is None


def test_a_used_folder_needs_resume_or_overwrite_and_killed_runs_leave_no_temporaries(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match=r"already holds a run \(checkpoints, logs, model\).*--overwrite-output-dir"):
        Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train()
    leftovers = [run / ".tmp-model-1234abcd", run / "checkpoints" / ".tmp-checkpoint-0000009",
                 run / ".old-model-deadbeef", run / "checkpoints" / ".tmp-latest.x1y2"]
    for path in leftovers:  # what kill -9 during a save or the final export leaves behind
        path.mkdir() if "latest" not in path.name else path.write_text("x")
    Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train(resume_from_checkpoint=True)
    assert not any(p.exists() for p in leftovers)
    out = Trainer(tiny_model(), args_for(run, overwrite_output_dir=True), synthetic("train", 16)).train()
    assert out.global_step == 2 and (run / "notes.txt").read_text() == "mine"
    assert len(read_log(run, "train")) == 2  # the old run's records are gone, not mixed in
    assert not [r for r in read_log(run, "info") if r.get("event") == "resumed"]


def test_save_steps_writes_checkpoints_between_evaluations(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_model(), args_for(run, num_epochs=3, save_steps=2, save_total_limit=10),
            synthetic("train", 16)).train()
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == [
        "checkpoint-0000002", "checkpoint-0000004", "checkpoint-0000006"]
    with pytest.raises(ConfigError, match="training.save_steps: expected an int >= 1"):
        TrainingArguments(save_steps=0)


def test_full_disk_names_the_path(tmp_path, monkeypatch, model_file, capsys):
    from safetensors import SafetensorError

    def rust_writer(path):
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    with pytest.raises(WriteError, match=r"cannot write '.*w\.safetensors': No space left on device") as info:
        atomic_write_with(tmp_path / "w.safetensors", rust_writer)
    assert info.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())

    def full(tensors, path, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    assert train_cli(model_file, tmp_path / "run", "--split", "none") == 2
    err = the_error(capsys.readouterr().err)
    assert "No space left on device" in err and "checkpoints" in err
    assert ckpt.list_checkpoints(tmp_path / "run" / "checkpoints") == []


# ---------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------
def test_refused_resumes_change_nothing_and_other_dirs_work(tmp_path, model_file, capsys):
    run = tmp_path / "run"
    assert train_cli(model_file, run) == 0
    capsys.readouterr()
    run_yaml = (run / "run.yaml").read_bytes()
    refused = {
        ("--batch-size", "4"): "batch_size (8 → 4)",
        ("--data-opt", "train_size=12"): "dataset.options.train_size (16 → 12)",
        ("--set", "dropout=0.5"): "model config dropout",
    }
    for extra, expected in refused.items():
        assert main(["train", "--resume", "--output-dir", str(run), *extra]) == 2, extra
        err = the_error(capsys.readouterr().err)
        assert expected in err, err
        assert (run / "run.yaml").read_bytes() == run_yaml
    assert main(["train", "--resume", "--output-dir", str(run)]) == 0  # the documented plain resume still works
    capsys.readouterr()
    new = tmp_path / "new"
    source = ckpt.find_latest_checkpoint(run / "checkpoints")
    assert main(["train", "--resume", str(source), "--output-dir", str(new)]) == 0
    assert (new / "model" / "model.safetensors").is_file() and (new / "run.yaml").is_file()
    assert ckpt.find_latest_checkpoint(new / "checkpoints").name == source.name
    capsys.readouterr()
    assert main(["train", "--resume", str(source), "--output-dir", str(new)]) == 2  # new/ holds a run now
    assert "already holds a run" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_current_step_and_says_how_to_resume(tmp_path, model_file, signum):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "mmfuse", "train", str(model_file), *DATA, "--output-dir", str(run),
            "--max-steps", "30", "--batch-size", "4", "--no-progress-bar", "--no-tensorboard", "--logging-steps",
            "1", "--split", "none", "--torch-threads", "1"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                             cwd=tmp_path)
    log = run / "logs" / "train.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, err
    assert "Traceback" not in err
    step = int(re.search(r"at step (\d+)", err).group(1))
    assert 2 <= step < 30
    assert f"resume with: mmfuse train --resume --output-dir {run}" in err
    assert ckpt.find_latest_checkpoint(run / "checkpoints").name == ckpt.checkpoint_name(step)
    if signum == signal.SIGTERM:  # the resume itself is checked once (it is the slow part)
        assert main(["train", "--resume", "--output-dir", str(run)]) == 0
        assert max(r["step"] for r in read_log(run, "train")) == 30


def test_hand_edited_trainer_state_is_refused_naming_the_field(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train()
    state_file = ckpt.find_latest_checkpoint(run / "checkpoints") / "trainer_state.json"
    good = json.loads(state_file.read_text())
    for field, value in (("best_checkpoint", "../../elsewhere"), ("global_step", "7"), ("world_size", 0)):
        state_file.write_text(json.dumps({**good, field: value}))
        with pytest.raises(CheckpointError, match=rf"trainer_state\.json'?: {field}: expected"):
            Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train(resume_from_checkpoint=True)
    state_file.write_text(json.dumps(good)[:25])
    with pytest.raises(ValueError, match=r"trainer_state\.json'?: not valid JSON \(truncated\?\)"):
        Trainer(tiny_model(), args_for(run), synthetic("train", 16)).train(resume_from_checkpoint=True)


def test_a_second_signal_stops_at_once_and_handlers_are_restored():
    from mmfuse.train.signals import SignalCatcher, TrainingInterrupted

    before = signal.getsignal(signal.SIGTERM)
    with SignalCatcher() as catcher:
        os.kill(os.getpid(), signal.SIGTERM)
        assert catcher.received == signal.SIGTERM  # the first one only sets the flag
        with pytest.raises(TrainingInterrupted, match="second SIGTERM") as info:
            os.kill(os.getpid(), signal.SIGTERM)
        assert info.value.exit_code == 143 and info.value.step is None
    assert signal.getsignal(signal.SIGTERM) is before
