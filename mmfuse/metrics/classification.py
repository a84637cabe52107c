"""Classification metrics: accuracy and macro / weighted F1, per task, with torchmetrics.

The numbers follow scikit-learn's defaults (``f1_score(y_true, y_pred, average=...)``, which the
tests check): per-class ``F1 = 2·TP / (2·TP + FP + FN)``; ``macro`` is the unweighted mean over
the classes that occur in the true **or** predicted labels, ``weighted`` weights each class by its
true count (support). Streaming and data parallelism come from torchmetrics: each rank updates its
metric states (true / false positive and negative counts per class) on its shard, and
:meth:`ClassificationMetrics.sync` sums them over the ranks, so every rank reports the metrics of
the whole evaluation set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

Average = Literal["macro", "weighted"]

#: metrics reported per task by :func:`classification_metrics` (and averaged over tasks)
CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1")
#: label value that marks "no label for this sample" (skipped, as in the heads' losses)
IGNORE_INDEX = -100


def _as_index_tensor(values: Sequence[int] | np.ndarray | Tensor, name: str) -> Tensor:
    tensor = values.detach() if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
    if tensor.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of class indices, got shape {tuple(tensor.shape)}")
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name}: expected integer class indices, got dtype {tensor.dtype}")
    return tensor.long()


def _checked(predictions: Sequence[int] | np.ndarray | Tensor, labels: Sequence[int] | np.ndarray | Tensor,
             num_classes: int) -> tuple[Tensor, Tensor]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    pred = _as_index_tensor(predictions, "predictions")
    true = _as_index_tensor(labels, "labels")
    if pred.shape != true.shape:
        raise ValueError(f"predictions and labels differ in length: {pred.shape[0]} vs {true.shape[0]}")
    for name, values in (("predictions", pred), ("labels", true)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise ValueError(f"{name}: class indices must be in [0, {num_classes}), got values in "
                             f"[{int(values.min())}, {int(values.max())}]")
    return pred, true


def confusion_matrix(
    predictions: Sequence[int] | np.ndarray | Tensor, labels: Sequence[int] | np.ndarray | Tensor, num_classes: int
) -> np.ndarray:
    """``[C, C]`` int64 counts: entry ``[t, p]`` = items of true class ``t`` predicted as ``p``."""
    pred, true = _checked(predictions, labels, num_classes)
    if num_classes == 1:
        return np.array([[pred.numel()]], dtype=np.int64)
    return multiclass_confusion_matrix(pred, true, num_classes, validate_args=False).numpy().astype(np.int64)


def per_class_f1(
    predictions: Sequence[int] | np.ndarray | Tensor, labels: Sequence[int] | np.ndarray | Tensor, num_classes: int
) -> np.ndarray:
    """``[C]`` F1 of every class (0 for a class that is neither true nor predicted)."""
    pred, true = _checked(predictions, labels, num_classes)
    return multiclass_f1_score(pred, true, num_classes, average="none", validate_args=False).numpy()


def classification_metrics(
    predictions: Sequence[int] | np.ndarray | Tensor, labels: Sequence[int] | np.ndarray | Tensor, num_classes: int
) -> dict[str, float]:
    """Accuracy, macro F1 and weighted F1 of one task's predicted vs true class indices."""
    pred, true = _checked(predictions, labels, num_classes)
    if num_classes == 1:  # torchmetrics' multiclass metrics need two classes; one class is always right
        return dict.fromkeys(CLASSIFICATION_METRICS, 1.0 if pred.numel() else 0.0)
    return {
        "accuracy": float(multiclass_accuracy(pred, true, num_classes, average="micro", validate_args=False)),
        "macro_f1": float(multiclass_f1_score(pred, true, num_classes, average="macro", validate_args=False)),
        "weighted_f1": float(multiclass_f1_score(pred, true, num_classes, average="weighted", validate_args=False)),
    }


def _task_metrics(num_classes: int) -> MetricCollection:
    options = {"num_classes": num_classes, "ignore_index": IGNORE_INDEX, "validate_args": False,
               "sync_on_compute": False}  # synced by ClassificationMetrics.sync, once
    return MetricCollection({
        "accuracy": MulticlassAccuracy(average="micro", **options),
        "macro_f1": MulticlassF1Score(average="macro", **options),
        "weighted_f1": MulticlassF1Score(average="weighted", **options),
        "confusion": MulticlassConfusionMatrix(**options),
    }, compute_groups=False)


class ClassificationMetrics:
    """Streaming multi-task metrics: ``update(logits, labels)`` per batch, ``compute()`` at the end.

    Args:
        num_classes: task → number of classes (at least 2 each; e.g. ``dataset.num_classes``).

    ``compute()`` returns ``"<task>/accuracy"``, ``"<task>/macro_f1"``, ``"<task>/weighted_f1"``
    for every task and, over all tasks, their means ``"accuracy"``, ``"macro_f1"``,
    ``"weighted_f1"`` (for one task they equal that task's numbers). Labels equal to ``-100``
    (no label for that task) are skipped. Call :meth:`sync` first under DDP (the trainer does) so
    every rank reports the metrics of the whole data set. :meth:`confusion` gives a task's
    ``[C, C]`` confusion matrix (rows: true class).
    """

    def __init__(self, num_classes: Mapping[str, int]) -> None:
        if not num_classes:
            raise ValueError("num_classes: expected at least one task")
        for task, n in num_classes.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                raise ValueError(f"num_classes[{task!r}]: expected an int >= 2, got {n!r}")
        self.num_classes = dict(num_classes)
        self.metrics = {task: _task_metrics(n) for task, n in self.num_classes.items()}

    def reset(self) -> None:
        """Back to the state after construction."""
        for collection in self.metrics.values():
            collection.reset()

    def update(self, logits: Mapping[str, Tensor], labels: Mapping[str, Tensor]) -> None:
        """Add one batch: ``logits[task]`` ``[B, C]`` (or predicted indices ``[B]``), ``labels[task]`` ``[B]``."""
        for task, n in self.num_classes.items():
            for where, given in (("logits", logits), ("labels", labels)):
                if task not in given:
                    raise KeyError(f"{where}: no entry for task {task!r} (have {sorted(given)})")
            scores = logits[task].detach()
            if scores.dim() == 2 and scores.shape[-1] != n:
                raise ValueError(f"logits[{task!r}]: expected {n} classes, got shape {tuple(scores.shape)}")
            pred = _as_index_tensor(scores.argmax(dim=-1) if scores.dim() == 2 else scores, f"logits[{task!r}]")
            true = _as_index_tensor(labels[task], f"labels[{task!r}]").to(pred.device)
            if pred.shape != true.shape:
                raise ValueError(f"labels[{task!r}]: {true.shape[0]} labels for {pred.shape[0]} predictions")
            bad = (true != IGNORE_INDEX) & ((true < 0) | (true >= n))
            if bool(bad.any()) or bool(((pred < 0) | (pred >= n)).any()):
                raise ValueError(f"labels[{task!r}]: class indices must be in [0, {n}) (or {IGNORE_INDEX}), "
                                 f"got {int(true[bad][0]) if bool(bad.any()) else 'a prediction out of range'}")
            collection = self.metrics[task].to(pred.device)  # NCCL syncs the states on the batch's device
            collection.update(pred, true)

    def sync(self) -> None:
        """Sum every task's metric states over the DDP ranks (no-op unless ``torch.distributed`` is initialised)."""
        for collection in self.metrics.values():
            for metric in collection.values():
                metric.sync()

    def confusion(self, task: str) -> np.ndarray:
        """The ``[C, C]`` int64 confusion matrix of ``task`` so far (rows: true class, columns: predicted)."""
        return self.metrics[task]["confusion"].confmat.detach().cpu().numpy().astype(np.int64)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        per_task: dict[str, dict[str, float]] = {}
        for task, collection in self.metrics.items():
            seen = int(self.confusion(task).sum())  # no labelled sample yet: 0 (torchmetrics would warn)
            per_task[task] = {name: float(collection[name].compute()) if seen else 0.0 for name in CLASSIFICATION_METRICS}
        for task, values in per_task.items():
            out.update({f"{task}/{name}": value for name, value in values.items()})
        for name in CLASSIFICATION_METRICS:
            out[name] = float(np.mean([values[name] for values in per_task.values()]))
        return out
