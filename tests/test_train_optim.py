"""Per-module learning rates (param_groups), weight-decay exclusions and the transformers schedules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import subprocess_env
from radm_support import one_thread  # noqa: F401 - fixture
from torch import nn
from train_support import synthetic, tiny_model

from mmfuse.core.config import ConfigError
from mmfuse.train import Trainer, TrainerCallback, TrainingArguments, read_log
from mmfuse.train.optim import build_optimizer, build_scheduler, parameter_groups

pytestmark = pytest.mark.usefixtures("one_thread")


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.head = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(()))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_groups_take_their_learning_rate_and_exclude_biases_norms_and_scalars_from_decay():
    model = Toy()
    groups = parameter_groups(model, 0.01, [{"match": "encoder.*", "learning_rate": 1e-5, "weight_decay": 0.1}])
    by_names = [(_names(model, g), g.get("lr"), g["weight_decay"]) for g in groups]
    assert by_names == [
        ({"head.weight"}, None, 0.01),  # default group: the optimizer's lr
        ({"head.bias", "scale"}, None, 0.0),
        ({"encoder.0.weight"}, 1e-5, 0.1),
        ({"encoder.0.bias", "encoder.1.weight", "encoder.1.bias"}, 1e-5, 0.0),  # norm weight: 1-D
    ]
    optimizer = build_optimizer(model, TrainingArguments(
        learning_rate=1e-3, weight_decay=0.01, param_groups=[{"match": "encoder.*", "learning_rate": 1e-5}]))
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        (1e-3, 0.01), (1e-3, 0.0), (1e-5, 0.01), (1e-5, 0.0)]
    assert not any(p is model.frozen.weight for g in optimizer.param_groups for p in g["params"])


def test_first_matching_group_wins_and_lists_of_patterns_work():
    model = Toy()
    groups = parameter_groups(model, 0.0, [{"match": ["head.*", "scale"], "learning_rate": 1.0},
                                           {"match": "*", "learning_rate": 2.0}])
    assert set().union(*(_names(model, g) for g in groups if g.get("lr") == 1.0)) == {"head.weight", "head.bias",
                                                                                   "scale"}
    assert set().union(*(_names(model, g) for g in groups if g.get("lr") == 2.0)) == {
        "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias"}


def test_model_no_weight_decay_names_are_respected():
    model = Toy()
    model.no_weight_decay = lambda: {"head.weight"}
    decay = parameter_groups(model, 0.5)[0]
    assert _names(model, decay) == {"encoder.0.weight"}


@pytest.mark.parametrize(("groups", "message"), [
    ([{"match": "encodr.*"}], r"training.param_groups\[0\].match: 'encodr.\*' selects no trainable parameter: it "
                              r"matches no parameter name \(the names start with 'scale', 'encoder.0.\*', 'encoder.1.\*', 'head.weight', "
                              r"'head.bias', 'frozen.weight', 'frozen.bias'\)"),
    ([{"match": "frozen.*"}], r"param_groups\[0\].match: 'frozen.\*' .*matches only frozen parameters"),
    ([{"match": "*"}, {"match": "head.*"}], r"param_groups\[1\].match: 'head.\*' .*taken by an earlier group"),
])
def test_pattern_matching_nothing_is_one_clear_error(groups, message):
    with pytest.raises(ConfigError, match=message):
        parameter_groups(Toy(), 0.0, groups)


@pytest.mark.parametrize(("groups", "message"), [
    ([{"match": "a.*", "lr": 1e-3}], r"param_groups\[0\]: unknown keys \['lr'\]"),
    ([{"learning_rate": 1e-3}], r"param_groups\[0\].match: expected a parameter-name pattern"),
    ([{"match": []}], r"param_groups\[0\].match: expected"),
    ([{"match": "a.*", "learning_rate": 0}], r"param_groups\[0\].learning_rate: expected a number > 0, got 0"),
    ([{"match": "a.*", "weight_decay": -1}], r"param_groups\[0\].weight_decay: expected a number >= 0, got -1"),
    ([{"match": "a.*", "learning_rate": "fast"}], r"param_groups\[0\].learning_rate: expected a number > 0"),
    ({"match": "a.*"}, r"training.param_groups: expected"),
])
def test_bad_param_groups_fail_on_construction(groups, message):
    with pytest.raises(ConfigError, match=message):
        TrainingArguments(param_groups=groups)


def test_linear_schedule_is_transformers_and_scales_every_group():
    from transformers import get_linear_schedule_with_warmup

    model = Toy()
    args = TrainingArguments(learning_rate=1e-3, warmup_steps=3,
                             param_groups=[{"match": "encoder.*", "learning_rate": 1e-4}])
    ours = build_scheduler(build_optimizer(model, args), args, total_steps=10)
    reference_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_linear_schedule_with_warmup(reference_optimizer, 3, 10)
    for step in range(10):
        factor = reference.get_last_lr()[0]
        assert factor == pytest.approx(step / 3 if step < 3 else (10 - step) / 7)
        assert ours.get_last_lr() == pytest.approx([1e-3 * factor] * 2 + [1e-4 * factor] * 2)
        ours.optimizer.step()
        ours.step()
        reference_optimizer.step()
        reference.step()


def test_cosine_schedule_by_name():
    args = TrainingArguments(learning_rate=1.0, warmup_steps=0, lr_scheduler_type="cosine")
    scheduler = build_scheduler(build_optimizer(Toy(), args), args, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])
    with pytest.raises(ConfigError, match="training.lr_scheduler_type: expected one of 'linear'"):
        TrainingArguments(lr_scheduler_type="reduce_lr_on_plateau")


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, state):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _args(tmp_path, name, **changes):
    values = dict(output_dir=str(tmp_path / name), num_epochs=2, batch_size=8, learning_rate=2e-3,
                  eval_strategy="epoch", logging_steps=1, progress_bar=False, tensorboard=False, seed=5,
                  warmup_steps=2, lr_scheduler_type="cosine",
                  param_groups=[{"match": "encoders.text_encoder.*", "learning_rate": 5e-4, "weight_decay": 0.0}])
    return TrainingArguments(**{**values, **changes})


def test_trainer_uses_the_groups_and_resumes_exactly_with_them(tmp_path):
    train, dev = synthetic("train", 24), synthetic("dev", 8)
    full = Trainer(tiny_model(), _args(tmp_path, "full"), train, dev)
    full.train()
    text_groups = [g for g in full.optimizer.param_groups if g["initial_lr"] == 5e-4]
    assert len(text_groups) == 2 and all(g["weight_decay"] == 0.0 for g in text_groups)
    reference = {r["step"]: (r["loss"], r["lr"]) for r in read_log(tmp_path / "full", "train")}

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_model(), _args(tmp_path, "resumed"), train, dev, callbacks=[StopAt(4)]).train()
    Trainer(tiny_model(), _args(tmp_path, "resumed"), train, dev).train(resume_from_checkpoint=True)
    resumed = {r["step"]: (r["loss"], r["lr"]) for r in read_log(tmp_path / "resumed", "train")}
    assert resumed == reference  # bit-identical losses and learning rates after the resume

    changed = _args(tmp_path, "resumed", param_groups=[{"match": "encoders.text_*", "learning_rate": 5e-4}])
    with pytest.raises(ConfigError, match=r"resume: .* param_groups"):
        Trainer(tiny_model(), changed, train, dev).train(resume_from_checkpoint=True)


def test_cli_reads_param_groups_as_yaml(tmp_path):
    run = [sys.executable, "-m", "mmfuse", "train", "radm-tiny", "--dataset", "synthetic", "--output-dir",
           str(tmp_path / "run"), "--max-steps", "1", "--eval-strategy", "no", "--no-progress-bar",
           "--param-groups", "[{match: 'encodrs.*', learning_rate: 1e-4}]"]
    proc = subprocess.run(run, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "training.param_groups[0].match: 'encodrs.*' selects no trainable parameter" in last
    assert "Traceback" not in proc.stderr
