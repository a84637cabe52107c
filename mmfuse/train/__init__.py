"""Training: :class:`Trainer` + :class:`TrainingArguments`, tasks, checkpoints, logs (see docs/training.md)."""

from __future__ import annotations

from mmfuse.train.arguments import TrainingArguments
from mmfuse.train.logs import read_log
from mmfuse.train.seeding import seed_everything
from mmfuse.tasks.classification import TASKS, Evaluator, TrainTask, get_task, list_tasks, register_task
from mmfuse.train.trainer import Trainer, TrainerCallback, TrainerState, TrainOutput

__all__ = [
    "TASKS",
    "Evaluator",
    "TrainOutput",
    "TrainTask",
    "Trainer",
    "TrainerCallback",
    "TrainerState",
    "TrainingArguments",
    "get_task",
    "list_tasks",
    "read_log",
    "register_task",
    "seed_everything",
]
