"""``TrainingArguments``: every knob of the :class:`~mmfuse.train.trainer.Trainer` in one dataclass.

Field names follow Hugging Face's ``TrainingArguments`` where the meaning is the same. Each field
carries a ``help`` text (``dataclasses.fields(TrainingArguments)[i].metadata["help"]``) that the
``mmfuse train`` command turns into its options, so ``--help`` and this class never disagree.
Values are checked on construction (type from the annotation, then the range); errors name the
field: ``ConfigError("training.learning_rate: expected a number > 0, got -1")``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

from mmfuse.core.config import ConfigError, call_with_config, check_type

MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
Strategy = Literal["epoch", "steps", "no"]
#: ``transformers.get_scheduler`` names that need nothing but the warm-up and the step count
SchedulerName = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
]
PARAM_GROUP_KEYS: tuple[str, ...] = ("match", "learning_rate", "weight_decay")
NonFinitePolicy = Literal["stop", "skip"]


def _field(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class TrainingArguments:
    """Configuration of one training run (see the field ``help`` texts, or ``mmfuse train --help``)."""

    output_dir: str = _field("runs/mmfuse", "folder for checkpoints, logs and the final model")
    num_epochs: int = _field(3, "passes over the training set (ignored when max_steps is set)")
    max_steps: int | None = _field(None, "total optimizer steps; overrides num_epochs")
    batch_size: int = _field(32, "training samples per optimizer micro-step and process")
    eval_batch_size: int | None = _field(None, "evaluation batch size per process (default: 2 x batch_size)")
    learning_rate: float = _field(1e-4, "peak AdamW learning rate (after warm-up)")
    weight_decay: float = _field(0.01, "AdamW weight decay (not applied to biases, norms and scalars)")
    param_groups: list[dict[str, Any]] | None = _field(
        None, "parameter groups with their own learning rate / weight decay, e.g. "
        "[{match: 'encoders.text_encoder.*', learning_rate: 8.0e-5}] (fnmatch patterns on parameter names; "
        "the first matching group wins; the rest use learning_rate / weight_decay)"
    )
    adam_beta1: float = _field(0.9, "AdamW beta1")
    adam_beta2: float = _field(0.999, "AdamW beta2")
    adam_epsilon: float = _field(1e-8, "AdamW epsilon")
    warmup_ratio: float = _field(0.1, "fraction of the steps with a linear learning-rate warm-up")
    warmup_steps: int | None = _field(None, "warm-up steps; overrides warmup_ratio")
    lr_scheduler_type: SchedulerName = _field(
        "linear", "learning-rate schedule after the warm-up (transformers.get_scheduler): linear, cosine, "
        "cosine_with_restarts, polynomial, constant, constant_with_warmup or inverse_sqrt"
    )
    max_grad_norm: float | None = _field(1.0, "clip the global gradient norm to this (null/0: no clipping)")
    gradient_accumulation_steps: int = _field(1, "micro-batches whose gradients add up to one optimizer step")
    mixed_precision: MixedPrecision = _field(
        "auto", "autocast dtype on CUDA: auto (bf16 if supported, else fp16), bf16, fp16 or no; always off on CPU"
    )
    seed: int = _field(42, "seed of parameters, data order, augmentation and dropout")
    eval_strategy: Strategy = _field("epoch", "evaluate (and checkpoint) every epoch, every eval_steps steps, or never")
    eval_steps: int | None = _field(None, "optimizer steps between evaluations with eval_strategy=steps")
    save_total_limit: int = _field(2, "training checkpoints kept (the best one is kept in addition)")
    save_steps: int | None = _field(
        None, "also write a checkpoint every N optimizer steps, between evaluations (null: only at evaluations)"
    )
    overwrite_output_dir: bool = _field(
        False, "delete the run already in output_dir (checkpoints, logs, model, run.yaml) and start afresh; "
        "without it a new (non-resume) run into a used output_dir is refused"
    )
    on_nonfinite_loss: NonFinitePolicy = _field(
        "stop", "a NaN/inf loss or gradient: stop (naming the step, last good checkpoint kept) or skip the "
        "step's update and go on"
    )
    metric_for_best_model: str | None = _field(
        None, "dev metric that selects the best checkpoint and early stopping (null: the task's default metric, "
        "e.g. macro_f1 for classification, joint_f1 for jmasa)"
    )
    greater_is_better: bool = _field(True, "whether a larger metric_for_best_model is better")
    early_stopping_patience: int | None = _field(
        None, "stop after this many evaluations without improvement (null: never)"
    )
    early_stopping_threshold: float = _field(0.0, "minimum improvement that resets the patience")
    load_best_model_at_end: bool = _field(True, "export the best checkpoint (not the last) as the final model")
    logging_steps: int = _field(10, "optimizer steps between training log records")
    num_workers: int = _field(0, "DataLoader worker processes (results do not depend on it)")
    device: str = _field("auto", "auto (the local CUDA device if any, else CPU), cpu, cuda or cuda:N")
    torch_threads: int | None = _field(None, "torch.set_num_threads for CPU training (null: torch's default)")
    progress_bar: bool = _field(True, "show a progress bar (rank 0 only)")
    tensorboard: bool = _field(True, "write TensorBoard event files under <output_dir>/logs/tensorboard")
    ddp_find_unused_parameters: bool = _field(False, "DistributedDataParallel's find_unused_parameters")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_type(getattr(self, f.name), hints[f.name], f"training.{f.name}")
        positive = ["num_epochs", "batch_size", "gradient_accumulation_steps", "logging_steps", "save_total_limit"]
        positive += [n for n in ("max_steps", "eval_batch_size", "eval_steps", "torch_threads") if getattr(self, n) is not None]
        for name in positive:
            self._require(name, getattr(self, name) >= 1, "an int >= 1")
        for name in ("learning_rate", "adam_epsilon"):
            self._require(name, getattr(self, name) > 0, "a number > 0")
        for name in ("adam_beta1", "adam_beta2"):
            self._require(name, 0 <= getattr(self, name) < 1, "a number in [0, 1)")
        self._require("weight_decay", self.weight_decay >= 0, "a number >= 0")
        self._require("warmup_ratio", 0 <= self.warmup_ratio <= 1, "a number in [0, 1]")
        self._require("early_stopping_threshold", self.early_stopping_threshold >= 0, "a number >= 0")
        self._require("num_workers", self.num_workers >= 0, "an int >= 0")
        if self.warmup_steps is not None:
            self._require("warmup_steps", self.warmup_steps >= 0, "an int >= 0")
        if self.max_grad_norm is not None:
            self._require("max_grad_norm", self.max_grad_norm >= 0, "a number >= 0 (or null)")
        if self.early_stopping_patience is not None:
            self._require("early_stopping_patience", self.early_stopping_patience >= 1, "an int >= 1 (or null)")
        if self.param_groups is not None:
            self._check_param_groups()
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ConfigError("training.eval_steps: required when eval_strategy is 'steps'")
        if self.early_stopping_patience is not None and self.eval_strategy == "no":
            raise ConfigError("training.early_stopping_patience: needs evaluations (eval_strategy is 'no')")
        if not self.output_dir:
            raise ConfigError("training.output_dir: expected a non-empty path")
        if self.save_steps is not None:
            self._require("save_steps", self.save_steps >= 1, "an int >= 1 (or null)")

    def _check_param_groups(self) -> None:
        assert self.param_groups is not None
        for i, group in enumerate(self.param_groups):
            where = f"training.param_groups[{i}]"
            unknown = sorted(set(group) - set(PARAM_GROUP_KEYS))
            if unknown:
                raise ConfigError(f"{where}: unknown keys {unknown}; expected some of {list(PARAM_GROUP_KEYS)}")
            match = group.get("match")
            if isinstance(match, str):
                match = [match]
            if not isinstance(match, list) or not match or not all(isinstance(m, str) and m for m in match):
                raise ConfigError(f"{where}.match: expected a parameter-name pattern or a non-empty list of them "
                                  f"(e.g. 'encoders.text_encoder.*'), got {group.get('match')!r}")
            for key, low, expected in (("learning_rate", 0.0, "a number > 0"), ("weight_decay", None, "a number >= 0")):
                value = group.get(key)
                if value is None:
                    continue
                bad = isinstance(value, bool) or not isinstance(value, (int, float))
                if bad or (value <= 0 if low is not None else value < 0):
                    raise ConfigError(f"{where}.{key}: expected {expected}, got {value!r}")

    def _require(self, name: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ConfigError(f"training.{name}: expected {expected}, got {getattr(self, name)!r}")

    @property
    def per_device_eval_batch_size(self) -> int:
        return self.eval_batch_size if self.eval_batch_size is not None else 2 * self.batch_size

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingArguments:
        """Build from a mapping (e.g. a YAML ``training:`` section); unknown keys are errors."""
        return call_with_config(cls, values, where="training")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainingArguments:
        return dataclasses.replace(self, **changes)


#: fields that define the sequence of batches and steps: a resumed run must use the same values
SCHEDULE_FIELDS: tuple[str, ...] = (
    "num_epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "seed",
    "learning_rate", "warmup_ratio", "warmup_steps", "eval_strategy", "eval_steps", "lr_scheduler_type",
    "param_groups",
)
