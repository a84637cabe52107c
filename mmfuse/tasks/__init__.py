"""Training tasks: what the trainer and ``mmfuse train/eval/predict`` need to know about a task.

:mod:`mmfuse.tasks.base` defines :class:`TrainTask`; :mod:`mmfuse.tasks.classification` and
:mod:`mmfuse.tasks.jmasa` are the built-in tasks. This package is the built-in plugin that
registers them (kind ``task``); a third-party plugin adds a task through the same
``mmfuse_tasks`` hook. A new task goes into a module of its own here, listed in the hook below.
"""

from __future__ import annotations

from typing import Any

from mmfuse.core.registry import hookimpl
from mmfuse.tasks.base import Batch, Collate, Evaluator, LabelSchema, TrainTask, get_task, list_tasks

__all__ = ["Batch", "Collate", "Evaluator", "LabelSchema", "TrainTask", "get_task", "list_tasks"]


def _classification() -> TrainTask:
    """multi-task text+image classification (accuracy, macro/weighted F1 per task)"""
    from mmfuse.tasks.classification import CLASSIFICATION

    return CLASSIFICATION


def _jmasa() -> TrainTask:
    """joint multimodal aspect-term extraction + aspect sentiment (JML; joint/MATE F1, MASC accuracy)"""
    from mmfuse.tasks.jmasa import JMASA

    return JMASA


@hookimpl
def mmfuse_tasks() -> dict[str, Any]:
    # zero-argument callables: a task module (and the models it needs) is imported when used
    return {"classification": _classification, "jmasa": _jmasa}
