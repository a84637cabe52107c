"""Trainer: exact resume, crash-safe checkpoints, learning, logging, bad images, argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from radm_support import one_thread  # noqa: F401 - fixture
from train_support import synthetic, tiny_model

from mmfuse.models.checkpoint import load_pretrained
from mmfuse.core.config import ConfigError
from mmfuse.data import BadImageError, build_dataset
from mmfuse.train import Trainer, TrainerCallback, TrainingArguments, read_log
from mmfuse.train import checkpointing as ckpt


pytestmark = pytest.mark.usefixtures("one_thread")  # shared 2-core machine: 1 thread is faster


def make_args(output_dir: Path, **changes) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir), num_epochs=2, batch_size=8, gradient_accumulation_steps=2, learning_rate=2e-3,
        eval_strategy="steps", eval_steps=2, logging_steps=1, progress_bar=False, tensorboard=False, seed=3,
    )
    return TrainingArguments(**{**values, **changes})


class StopAt(TrainerCallback):
    """Simulates a kill: raises after optimizer step ``step`` (after that step's checkpoint, if any)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, state):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after step {self.step}")


def train_losses(output_dir: Path) -> dict[int, float]:
    """Per-step training loss; the last record wins (steps redone after a resume overwrite)."""
    return {r["step"]: r["loss"] for r in read_log(output_dir, "train")}


def test_resume_continues_exactly(tmp_path):
    # 40 items / batch 8 = 5 micro-batches per epoch = steps of 2, 2 and 1 micro-batches; dropout and
    # augmentation are on; the kill comes mid-epoch 2, one step after the step-4 checkpoint.
    train, dev = synthetic("train", 40), synthetic("dev", 16)
    full = Trainer(tiny_model(), make_args(tmp_path / "full"), train, dev)
    full.train()
    reference = train_losses(tmp_path / "full")
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]

    args = make_args(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_model(), args, train, dev, callbacks=[StopAt(5)]).train()
    latest = ckpt.find_latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert latest is not None and latest.name == "checkpoint-0000004"
    state = ckpt.load_trainer_state(latest)
    assert (state["epoch"], state["batches_in_epoch"]) == (1, 2)  # resumes mid-epoch

    # a different model initialisation must not matter: everything comes from the checkpoint
    Trainer(tiny_model(seed=99), args, train, dev).train(resume_from_checkpoint=True)
    resumed = train_losses(tmp_path / "resumed")
    assert resumed == reference  # bit-identical losses, steps 5 and 6 included
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_log(tmp_path / "resumed", "info")[0]["event"] == "resumed"


def test_resume_with_a_different_schedule_is_refused(tmp_path):
    train = synthetic("train", 16)
    Trainer(tiny_model(), make_args(tmp_path, num_epochs=1, eval_strategy="no"), train).train()
    trainer = Trainer(tiny_model(), make_args(tmp_path, num_epochs=1, eval_strategy="no", batch_size=4), train)
    with pytest.raises(ConfigError, match=r"resume: .*batch_size \(8 → 4\)"):
        trainer.train(resume_from_checkpoint=True)
    with pytest.raises(FileNotFoundError, match="not a complete training checkpoint"):
        trainer.train(resume_from_checkpoint=tmp_path / "nowhere")


def test_crash_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    train, dev = synthetic("train", 32), synthetic("dev", 8)
    args = make_args(tmp_path, num_epochs=1, gradient_accumulation_steps=1, eval_steps=1)
    real_write_json = ckpt.write_json

    def crash_on_second_state(path, value):
        if path.name == ckpt.TRAINER_STATE_NAME and value["global_step"] == 2:
            raise OSError("disk full (simulated)")
        real_write_json(path, value)

    monkeypatch.setattr(ckpt, "write_json", crash_on_second_state)
    with pytest.raises(OSError, match="simulated"):
        Trainer(tiny_model(), args, train, dev).train()
    root = tmp_path / "checkpoints"
    assert (root / ".tmp-checkpoint-0000002").is_dir()  # the half-written one, never published
    assert not (root / "checkpoint-0000002").exists()
    latest = ckpt.find_latest_checkpoint(root)
    assert latest == root / "checkpoint-0000001"
    model = load_pretrained(latest)  # the previous checkpoint is whole and loadable
    assert sum(p.numel() for p in model.parameters()) > 0

    monkeypatch.setattr(ckpt, "write_json", real_write_json)
    out = Trainer(tiny_model(), args, train, dev).train(resume_from_checkpoint=True)
    assert out.global_step == 4 and not (root / ".tmp-checkpoint-0000002").exists()
    assert [p.name for p in ckpt.list_checkpoints(root)][-1] == "checkpoint-0000004"


def test_training_improves_dev_accuracy_and_logs_every_loss(tmp_path):
    train, dev = synthetic("train", 480), synthetic("dev", 120)
    model = tiny_model(aux_losses=[{"name": "itc", "weight": 0.1}])
    args = make_args(tmp_path, num_epochs=4, batch_size=16, gradient_accumulation_steps=1, learning_rate=3e-3,
                     eval_strategy="epoch", logging_steps=10, tensorboard=True, warmup_ratio=0.05)
    trainer = Trainer(model, args, train, dev)
    before = trainer.evaluate()
    out = trainer.train()
    assert out.metrics["accuracy"] >= before["accuracy"] + 0.15, (before, out.metrics)
    assert out.metrics["accuracy"] > synthetic("dev", 8).ceilings()["sentiment"].as_dict()["text"]
    records = read_log(tmp_path, "train")
    assert {"loss", "losses/sentiment", "losses/itc", "lr", "grad_norm"} <= set(records[0])
    assert records[-1]["losses/sentiment"] < records[0]["losses/sentiment"]
    evals = read_log(tmp_path, "eval")
    assert len(evals) == 4 and out.best_metric == max(e["macro_f1"] for e in evals)
    assert list((tmp_path / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    saved = json.loads((tmp_path / "model" / "eval_results.json").read_text())
    assert saved["macro_f1"] == pytest.approx(out.best_metric)
    task = json.loads((tmp_path / "model" / "task.json").read_text())
    # task.json records the data set build_dataset made the training set from (so `mmfuse eval RUN` finds it)
    assert task.pop("dataset") == {"name": "synthetic", "data_dir": None, "options": {"train_size": 480, "image_size": 32}}
    assert task == {"task": "classification", "labels": {"tasks": {"sentiment": ["negative", "neutral", "positive"]}}}


def test_early_stopping_stops_after_patience(tmp_path):
    train, dev = synthetic("train", 16), synthetic("dev", 8)
    # lr so small that the metric cannot improve by the threshold: stop after 2 evaluations without improvement
    args = make_args(tmp_path, num_epochs=10, gradient_accumulation_steps=1, eval_strategy="epoch", learning_rate=1e-9,
                     early_stopping_patience=2, early_stopping_threshold=0.5)
    out = Trainer(tiny_model(), args, train, dev).train()
    assert out.stopped_early and out.global_step == 3 * 2
    assert len(read_log(tmp_path, "eval")) == 3
    (final,) = read_log(tmp_path, "final")  # the exported (best = first) model's metrics
    assert final["checkpoint"] == "checkpoint-0000002"


def write_mvsa_json(root: Path, n: int, broken: dict[str, str]) -> Path:
    split_dir, image_dir = root / "split", root / "dataset_image"
    split_dir.mkdir(parents=True)
    image_dir.mkdir()
    items = []
    for i in range(n):
        items.append({"id": str(i), "text": ["so happy", "meh", "so sad"][i % 3], "emotion_label": i % 3})
        if broken.get(str(i)) == "corrupt":
            (image_dir / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        elif str(i) not in broken:
            Image.new("RGB", (40, 30), [(220, 40, 40), (40, 80, 220), (30, 160, 60)][i % 3]).save(image_dir / f"{i}.jpg")
    for split in ("train", "dev", "test"):
        (split_dir / f"{split}.json").write_text(json.dumps(items))
    return split_dir


def test_bad_images_end_to_end(tmp_path):
    data_dir = write_mvsa_json(tmp_path / "mvsa", 12, {"4": "corrupt", "7": "missing"})
    args = make_args(tmp_path / "run", num_epochs=1, gradient_accumulation_steps=1, eval_strategy="epoch")
    strict = build_dataset("mvsa-json", "train", data_dir=data_dir)
    with pytest.raises(BadImageError, match=r"4\.jpg|7\.jpg"):
        Trainer(tiny_model(), args, strict, strict).train()
    with pytest.warns(UserWarning, match="skipping 2 item"):
        lenient = build_dataset("mvsa-json", "train", data_dir=data_dir, on_bad_image="skip")
    # the failed run left logs behind: a fresh start into the same folder has to say so
    out = Trainer(tiny_model(), args.replace(overwrite_output_dir=True), lenient, lenient).train()
    assert out.global_step == 2  # 10 good items / batch 8
    summaries = [r["summary"] for r in read_log(tmp_path / "run", "info")]
    assert any("skipped 2 item(s) with bad images" in s for s in summaries)


def test_argument_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"training\.gradient_accumulation_steps: expected an int >= 1, got 0"):
        TrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=0)
    with pytest.raises(ConfigError, match=r"training\.learnin_rate: unknown key \(did you mean 'learning_rate'\?\)"):
        TrainingArguments.from_dict({"learnin_rate": 1e-3})
    train, dev = synthetic("train", 8), synthetic("dev", 8)
    args = make_args(tmp_path, num_epochs=1, eval_strategy="epoch", metric_for_best_model="f1")
    with pytest.raises(ConfigError, match=r"metric_for_best_model: 'f1' is not among the evaluation metrics"):
        Trainer(tiny_model(), args, train, dev).train()
    with pytest.raises(TypeError, match="args: expected TrainingArguments"):
        Trainer(tiny_model(), {"output_dir": "x"}, train)  # type: ignore[arg-type]
