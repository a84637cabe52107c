"""Training tasks: what the trainer and ``mmfuse train/eval/predict`` need to know about a task.

The trainer itself only moves batches, calls ``model(batch)`` and back-propagates
``output.loss``. Everything task-specific — how raw samples become a batch, how outputs are
scored, how predictions are written — comes from a :class:`TrainTask`, looked up by name
(``mmfuse train --task NAME``):

* ``label_schema(dataset)``: a JSON-serialisable description of the labels (class names, tag
  sets, ...). It is saved with every checkpoint (``task.json``), so ``eval`` and ``predict``
  interpret a model's outputs without the training data.
* ``build_collator(processor, schema, return_ids)``: ``collate(list of raw samples) -> batch``
  (or ``None`` for a batch whose samples were all dropped).
* ``build_evaluator(schema)``: an :class:`Evaluator` — ``update(batch, output)`` per batch,
  ``sync()`` across DDP ranks, ``compute() -> {metric: value}``.
* ``format_predictions(batch, output, schema)``: one JSON-serialisable dict per sample.
* ``configure_model(config, schema)``: adapt a model config to the data (e.g. set the number
  of classes of each head); may return it unchanged.
* ``default_metric``: the metric that selects the best checkpoint unless told otherwise.
* ``build_selector(schema, model)`` (optional): the evaluator of the trainer's own evaluations
  on the eval (dev) split. Besides scoring, it chooses inference settings on that split (e.g. the
  decoding of a span model) and, in ``compute()``, applies them to ``model`` so that they are
  saved with the checkpoint; ``compute()`` returns the metrics under the chosen settings.
  ``mmfuse eval`` / ``predict`` use ``build_evaluator`` and the settings saved with the model,
  so nothing is ever chosen on a test split.

Built in: ``classification`` (multi-task classification: :class:`ClassificationCollator`,
:class:`~mmfuse.metrics.ClassificationMetrics`, label names + probabilities). Other tasks are
added with :func:`register_task`, either as a :class:`TrainTask` or lazily as an import path
``"package.module:ATTRIBUTE"`` resolved on first use (so the CLI does not import every task).
See docs/training.md.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mmfuse.config import ConfigError
from mmfuse.data.collate import ClassificationCollator
from mmfuse.metrics.classification import ClassificationMetrics

Batch = dict[str, Any]
Collate = Callable[[Sequence[Any]], "Batch | None"]
LabelSchema = dict[str, Any]


@runtime_checkable
class Evaluator(Protocol):
    """Accumulates a task's metrics over an evaluation set (see :class:`~mmfuse.metrics.CountingMetric`)."""

    def update(self, batch: Mapping[str, Any], output: Any) -> None: ...

    def sync(self) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclasses.dataclass(frozen=True)
class TrainTask:
    """A task the trainer and CLI can run (see the module docstring for each hook's contract)."""

    name: str
    description: str
    label_schema: Callable[[Any], LabelSchema]
    build_collator: Callable[[Any, LabelSchema, bool], Collate]
    build_evaluator: Callable[[LabelSchema], Evaluator]
    format_predictions: Callable[[Mapping[str, Any], Any, LabelSchema], list[dict[str, Any]]]
    configure_model: Callable[[dict[str, Any], LabelSchema], dict[str, Any]] = lambda config, schema: config
    default_metric: str = "macro_f1"
    build_selector: Callable[[LabelSchema, Any], Evaluator] | None = None


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------
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

# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
#: task name → TrainTask, or "module:attribute" of one (imported on first use)
TASKS: dict[str, TrainTask | str] = {"classification": CLASSIFICATION, "jmasa": "mmfuse.models.jml_task:JMASA"}


def register_task(task: TrainTask | str, name: str | None = None, *, replace: bool = False) -> None:
    """Add a task: a :class:`TrainTask` (``name`` defaults to ``task.name``) or a lazy
    ``"module:attribute"`` path (then ``name`` is required)."""
    if isinstance(task, TrainTask):
        name = name or task.name
    elif isinstance(task, str):
        if name is None or ":" not in task:
            raise ValueError(f"task: a lazy task is registered as register_task('module:attribute', name), got {task!r}")
    else:
        raise TypeError(f"task: expected a TrainTask or a 'module:attribute' string, got {type(task).__name__}")
    if name in TASKS and not replace and TASKS[name] is not task:
        raise ValueError(f"task {name!r} is already registered (pass replace=True to overwrite it)")
    TASKS[name] = task


def list_tasks() -> list[str]:
    return sorted(TASKS)


def get_task(task: str | TrainTask) -> TrainTask:
    """The :class:`TrainTask` registered as ``task`` (a TrainTask is returned as is)."""
    if isinstance(task, TrainTask):
        return task
    entry = TASKS.get(task)
    if entry is None:
        close = difflib.get_close_matches(str(task), list(TASKS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"task: unknown task {task!r}{hint}; known: {', '.join(list_tasks())}")
    if isinstance(entry, str):
        module_name, _, attribute = entry.partition(":")
        resolved = getattr(importlib.import_module(module_name), attribute, None)
        if not isinstance(resolved, TrainTask):
            raise TypeError(f"task {task!r}: {entry} is not a mmfuse.train.TrainTask (got {type(resolved).__name__})")
        TASKS[task] = entry = resolved
    return entry
