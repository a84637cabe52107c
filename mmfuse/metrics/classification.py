"""Classification metrics: accuracy and macro / weighted F1, per task, from confusion matrices.

Everything is computed from a ``[C, C]`` confusion matrix (rows: true class, columns: predicted
class), which makes evaluation streamable (add up per-batch matrices) and exact under data
parallelism (sum the matrices of every rank with one ``all_reduce``).

F1 follows scikit-learn's defaults (``f1_score(y_true, y_pred, average=...)``): per-class
``F1 = 2·TP / (2·TP + FP + FN)``; ``macro`` is the unweighted mean over the classes that occur in
the true **or** predicted labels, ``weighted`` weights each class by its true count (support).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mmfuse.metrics.base import CountingMetric

Average = Literal["macro", "weighted"]

#: metrics reported per task by :func:`metrics_from_confusion` (and averaged over tasks)
CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1")


def _as_index_array(values: Sequence[int] | np.ndarray | Tensor, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of class indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name}: expected integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def confusion_matrix(
    predictions: Sequence[int] | np.ndarray | Tensor, labels: Sequence[int] | np.ndarray | Tensor, num_classes: int
) -> np.ndarray:
    """``[C, C]`` int64 counts: entry ``[t, p]`` = items of true class ``t`` predicted as ``p``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    pred = _as_index_array(predictions, "predictions")
    true = _as_index_array(labels, "labels")
    if pred.shape != true.shape:
        raise ValueError(f"predictions and labels differ in length: {pred.shape[0]} vs {true.shape[0]}")
    for name, array in (("predictions", pred), ("labels", true)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(
                f"{name}: class indices must be in [0, {num_classes}), got values in [{array.min()}, {array.max()}]"
            )
    return np.bincount(true * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _check_confusion(confusion: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(confusion, Tensor):
        confusion = confusion.detach().cpu().numpy()
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion: expected a square [C, C] matrix, got shape {cm.shape}")
    return cm.astype(np.float64)


def accuracy_from_confusion(confusion: np.ndarray | Tensor) -> float:
    """Fraction of items on the diagonal (0.0 for an empty matrix)."""
    cm = _check_confusion(confusion)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def per_class_f1(confusion: np.ndarray | Tensor) -> np.ndarray:
    """``[C]`` F1 of each class, ``2·TP / (2·TP + FP + FN)``; 0 where that denominator is 0."""
    cm = _check_confusion(confusion)
    tp = np.diag(cm)
    denominator = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def f1_from_confusion(confusion: np.ndarray | Tensor, average: Average = "macro") -> float:
    """Macro or support-weighted F1 (scikit-learn's default label set; see the module docstring)."""
    cm = _check_confusion(confusion)
    f1 = per_class_f1(cm)
    support = cm.sum(axis=1)
    if average == "macro":
        present = (support + cm.sum(axis=0)) > 0
        return float(f1[present].mean()) if present.any() else 0.0
    if average == "weighted":
        return float((f1 * support).sum() / support.sum()) if support.sum() else 0.0
    raise ValueError(f"average: expected 'macro' or 'weighted', got {average!r}")


def metrics_from_confusion(confusion: np.ndarray | Tensor) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "weighted_f1"}`` of one confusion matrix."""
    return {
        "accuracy": accuracy_from_confusion(confusion),
        "macro_f1": f1_from_confusion(confusion, "macro"),
        "weighted_f1": f1_from_confusion(confusion, "weighted"),
    }


def classification_metrics(
    predictions: Sequence[int] | np.ndarray | Tensor, labels: Sequence[int] | np.ndarray | Tensor, num_classes: int
) -> dict[str, float]:
    """Accuracy, macro F1 and weighted F1 of one task's predicted vs true class indices."""
    return metrics_from_confusion(confusion_matrix(predictions, labels, num_classes))


class ClassificationMetrics(CountingMetric):
    """Streaming multi-task metrics: ``update(logits, labels)`` per batch, ``compute()`` at the end.

    Args:
        num_classes: task → number of classes (e.g. ``dataset.num_classes``).

    ``compute()`` returns ``"<task>/accuracy"``, ``"<task>/macro_f1"``, ``"<task>/weighted_f1"``
    for every task and, over all tasks, their means ``"accuracy"``, ``"macro_f1"``,
    ``"weighted_f1"`` (for one task they equal that task's numbers). Call :meth:`sync` first under
    DDP (the trainer does) so every rank reports the metrics of the whole data set.
    """

    def __init__(self, num_classes: Mapping[str, int]) -> None:
        if not num_classes:
            raise ValueError("num_classes: expected at least one task")
        for task, n in num_classes.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"num_classes[{task!r}]: expected a positive int, got {n!r}")
        super().__init__({task: torch.zeros(n, n, dtype=torch.int64) for task, n in num_classes.items()})
        self.num_classes = dict(num_classes)

    def update(self, logits: Mapping[str, Tensor], labels: Mapping[str, Tensor]) -> None:
        """Add one batch: ``logits[task]`` ``[B, C]`` (or predicted indices ``[B]``), ``labels[task]`` ``[B]``."""
        for task, n in self.num_classes.items():
            for where, given in (("logits", logits), ("labels", labels)):
                if task not in given:
                    raise KeyError(f"{where}: no entry for task {task!r} (have {sorted(given)})")
            scores = logits[task].detach()
            pred = scores.argmax(dim=-1) if scores.dim() == 2 else scores
            if scores.dim() == 2 and scores.shape[-1] != n:
                raise ValueError(f"logits[{task!r}]: expected {n} classes, got shape {tuple(scores.shape)}")
            cm = confusion_matrix(pred, labels[task], n)
            self.counts[task] += torch.from_numpy(cm)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        per_task = {task: metrics_from_confusion(self.counts[task]) for task in self.num_classes}
        for task, values in per_task.items():
            out.update({f"{task}/{name}": value for name, value in values.items()})
        for name in CLASSIFICATION_METRICS:
            out[name] = float(np.mean([values[name] for values in per_task.values()]))
        return out
