"""The ``classification`` task: multi-task text+image classification in the trainer / CLI.

Batches come from :class:`~mmfuse.data.collators.classification.ClassificationCollator`, metrics
from :class:`~mmfuse.metrics.ClassificationMetrics` (accuracy, macro / weighted F1 per task),
predictions are label names with probabilities. The hooks are described in :mod:`mmfuse.tasks.base`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mmfuse.core.config import ConfigError
from mmfuse.data.collators.classification import ClassificationCollator
from mmfuse.metrics.classification import ClassificationMetrics
from mmfuse.tasks.base import Collate, LabelSchema, TrainTask


def _class_names(schema: Mapping[str, Any]) -> dict[str, list[str]]:
    tasks = schema.get("tasks") if isinstance(schema, Mapping) else None
    if not isinstance(tasks, Mapping) or not tasks:
        raise ConfigError(f"label schema: expected {{'tasks': {{task: [class names]}}}}, got {schema!r}")
    return {task: list(names) for task, names in tasks.items()}


def classification_schema(dataset: Any) -> LabelSchema:
    """``{"tasks": {task: [class names]}}`` from a :class:`~mmfuse.data.ClassificationDataset`."""
    tasks = getattr(dataset, "tasks", None)
    if not isinstance(tasks, Mapping):
        raise TypeError(
            f"classification: the data set must have `tasks` ({{task: class names}}), got {type(dataset).__name__}"
        )
    return {"tasks": {task: list(names) for task, names in tasks.items()}}


def classification_collator(processor: Any, schema: LabelSchema, return_ids: bool) -> Collate:
    return ClassificationCollator(processor, tasks=list(_class_names(schema)), return_ids=return_ids)


class ClassificationEvaluator(ClassificationMetrics):
    """:class:`ClassificationMetrics` fed from ``(batch, output)``: ``output.logits`` vs ``batch["labels"]``."""

    def __init__(self, schema: LabelSchema) -> None:
        super().__init__({task: len(names) for task, names in _class_names(schema).items()})

    def update(self, batch: Mapping[str, Any], output: Any) -> None:  # type: ignore[override]
        if "labels" not in batch:
            raise KeyError("evaluation batch has no 'labels'; evaluate on a labelled split")
        super().update(output.logits, batch["labels"])


def format_classification(batch: Mapping[str, Any], output: Any, schema: LabelSchema) -> list[dict[str, Any]]:
    """Per sample: ``{"id", "prediction": {task: name}, "probabilities": {task: {name: p}}}``
    (+ ``"label": {task: name}`` when the batch has labels)."""
    names = _class_names(schema)
    probabilities = {task: torch.softmax(output.logits[task].float(), dim=-1).cpu() for task in names}
    size = next(iter(probabilities.values())).shape[0]
    ids = batch.get("ids") or [None] * size
    labels: Mapping[str, Tensor] = batch.get("labels") or {}
    rows = []
    for i in range(size):
        row: dict[str, Any] = {"id": ids[i]}
        row["prediction"] = {task: names[task][int(p[i].argmax())] for task, p in probabilities.items()}
        row["probabilities"] = {
            task: {name: round(float(v), 6) for name, v in zip(names[task], p[i])} for task, p in probabilities.items()
        }
        if labels:
            row["label"] = {task: names[task][int(labels[task][i])] for task in names if task in labels}
        rows.append(row)
    return rows


def configure_classification_model(config: dict[str, Any], schema: LabelSchema) -> dict[str, Any]:
    """Give the model one head per data-set task: ``heads.tasks = {task: number of classes}``.

    Applies to models whose ``heads`` spec has a ``tasks`` mapping (RADM and the like); other
    configs are returned unchanged.
    """
    heads = config.get("heads")
    if not (isinstance(heads, Mapping) and isinstance(heads.get("tasks"), Mapping)):
        return config
    wanted = {task: len(names) for task, names in _class_names(schema).items()}
    if dict(heads["tasks"]) == wanted:
        return config
    config = copy.deepcopy(config)
    config["heads"]["tasks"] = wanted
    weights = config.get("task_weights")
    if isinstance(weights, Mapping):
        config["task_weights"] = {t: w for t, w in weights.items() if t in wanted}
    return config


CLASSIFICATION = TrainTask(
    name="classification",
    description="multi-task text+image classification (accuracy, macro/weighted F1 per task)",
    label_schema=classification_schema,
    build_collator=classification_collator,
    build_evaluator=ClassificationEvaluator,
    format_predictions=format_classification,
    configure_model=configure_classification_model,
    default_metric="macro_f1",
)
