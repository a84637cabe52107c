"""What a training task is: the hooks the trainer and ``mmfuse train/eval/predict`` call.

The trainer itself only moves batches, calls ``model(batch)`` and back-propagates
``output.loss``. Everything task-specific — how raw samples become a batch, how outputs are
scored, how predictions are written — comes from a :class:`TrainTask`, looked up by name
(``mmfuse train --task NAME``) in the registry (kind ``task``):

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

Built in: ``classification`` (:mod:`mmfuse.tasks.classification`) and ``jmasa``
(:mod:`mmfuse.tasks.jmasa`), contributed by the ``mmfuse_tasks`` hook of :mod:`mmfuse.tasks`.
A plugin adds a task through the same hook (see docs/training.md and docs/plugins.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from mmfuse.core.registry import get_registry

Batch = dict[str, Any]
Collate = Callable[[Sequence[Any]], "Batch | None"]
LabelSchema = dict[str, Any]


@runtime_checkable
class Evaluator(Protocol):
    """Accumulates a task's metrics over an evaluation set (``update`` per batch, ``sync`` across
    DDP ranks, then ``compute``)."""

    def update(self, batch: Mapping[str, Any], output: Any) -> None: ...

    def sync(self) -> None: ...

    def compute(self) -> dict[str, float]: ...


def _unchanged(config: dict[str, Any], schema: LabelSchema) -> dict[str, Any]:
    return config


@dataclasses.dataclass(frozen=True)
class TrainTask:
    """A task the trainer and CLI can run (see the module docstring for each hook's contract)."""

    name: str
    description: str
    label_schema: Callable[[Any], LabelSchema]
    build_collator: Callable[[Any, LabelSchema, bool], Collate]
    build_evaluator: Callable[[LabelSchema], Evaluator]
    format_predictions: Callable[[Mapping[str, Any], Any, LabelSchema], list[dict[str, Any]]]
    configure_model: Callable[[dict[str, Any], LabelSchema], dict[str, Any]] = _unchanged
    default_metric: str = "macro_f1"
    build_selector: Callable[[LabelSchema, Any], Evaluator] | None = None


def list_tasks() -> list[str]:
    """Names of the registered tasks (built-in and from plugins), sorted."""
    return get_registry().names("task")


def get_task(task: str | TrainTask) -> TrainTask:
    """The :class:`TrainTask` registered as ``task`` (a TrainTask is returned as is).

    A registry entry is a TrainTask or a zero-argument callable returning one (imported on
    first use, so the CLI does not import every task).
    """
    if isinstance(task, TrainTask):
        return task
    info = get_registry().get("task", task)
    entry = info.factory
    resolved = entry if isinstance(entry, TrainTask) else entry() if callable(entry) else entry
    if not isinstance(resolved, TrainTask):
        raise TypeError(f"task {task!r} (plugin {info.plugin!r}) is not a mmfuse.tasks.TrainTask "
                        f"(got {type(resolved).__name__})")
    return resolved
