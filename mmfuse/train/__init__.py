"""Training: :class:`Trainer` + :class:`TrainingArguments`, checkpoints, logs (see docs/training.md); tasks are in :mod:`mmfuse.tasks`."""

from __future__ import annotations

from mmfuse.train.arguments import TrainingArguments
from mmfuse.train.logs import read_log
from mmfuse.train.seeding import seed_everything
from mmfuse.train.trainer import Trainer, TrainerCallback, TrainerState, TrainOutput

__all__ = [
    "TrainOutput",
    "Trainer",
    "TrainerCallback",
    "TrainerState",
    "TrainingArguments",
    "read_log",
    "seed_everything",
]
