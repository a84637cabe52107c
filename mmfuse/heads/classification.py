"""Classification heads for one or several tasks over a fused vector (``classification``).

MSED, for instance, has three tasks on the same posts: ``{"sentiment": 3, "emotion": 6,
"desire": 7}``; MVSA has one (``{"sentiment": 3}``). Each task gets its own small MLP; the loss
of each task is the cross-entropy of its logits (the model weights and sums them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.core.batch import checking_values
from mmfuse.core.config import ConfigError

#: label value that marks "no label for this task" (excluded from the loss)
IGNORE_INDEX = -100


def check_class_labels(labels: Any, tasks: Mapping[str, int], batch_size: int) -> dict[str, Tensor]:
    """Validate ``labels`` (task → ``[B]`` long class indices or ``IGNORE_INDEX``) against
    ``tasks`` (task → number of classes); return them as long tensors. Every classifier uses this."""
    if not isinstance(labels, Mapping):
        raise TypeError(f"labels: expected a dict task -> LongTensor [B], got {type(labels).__name__}")
    missing = [t for t in tasks if t not in labels]
    unknown = [t for t in labels if t not in tasks]
    if missing or unknown:
        raise ValueError(
            f"labels: the model's tasks are {sorted(tasks)}; "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unknown {unknown}" if unknown else "")
        )
    for task, n_classes in tasks.items():
        y = labels[task]
        key = f"labels[{task!r}]"
        if not isinstance(y, Tensor):
            raise TypeError(f"{key}: expected a LongTensor [B], got {type(y).__name__}")
        if y.dtype not in (torch.long, torch.int, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"{key}: expected integer class indices (torch.long), got {y.dtype}")
        if tuple(y.shape) != (batch_size,):
            raise ValueError(f"{key}: expected shape [{batch_size}] (one label per sample), got {tuple(y.shape)}")
        bad = (y != IGNORE_INDEX) & ((y < 0) | (y >= n_classes))
        if checking_values() and bool(bad.any()):
            raise ValueError(
                f"{key}: class indices must be in [0, {n_classes - 1}] (or {IGNORE_INDEX} to ignore), "
                f"got {int(y[bad][0])}"
            )
    return {task: labels[task].long() for task in tasks}


class ClassificationHeads(nn.Module):
    """One classifier per task on a ``[B, d_in]`` vector.

    Args:
        d_in: width of the input vector (injected by the model).
        tasks: task name → number of classes, e.g. ``{"sentiment": 3}``.
        hidden_dim: hidden width of each task's MLP (``Linear → GELU → Dropout → Linear``);
            None or 0 for a single linear layer.
        dropout: dropout on the input (and hidden layer).

    ``forward(x [B, d_in]) -> {task: logits [B, n_classes]}``;
    ``losses(logits, labels) -> {task: unweighted mean cross-entropy}``.
    """

    def __init__(self, d_in: int, tasks: dict[str, int], hidden_dim: int | None = None, dropout: float = 0.2) -> None:
        super().__init__()
        if not tasks:
            raise ConfigError("tasks: expected at least one task, e.g. {'sentiment': 3}")
        for task, n_classes in tasks.items():
            if not task or "." in task:
                raise ConfigError(f"tasks: task names must be non-empty and without dots, got {task!r}")
            if n_classes < 2:
                raise ConfigError(f"tasks.{task}: expected at least 2 classes, got {n_classes}")
        self.tasks: dict[str, int] = dict(tasks)
        self.classifiers = nn.ModuleDict()
        for task, n_classes in self.tasks.items():
            if hidden_dim:
                layers: list[nn.Module] = [nn.Dropout(dropout), nn.Linear(d_in, hidden_dim), nn.GELU(),
                                           nn.Dropout(dropout), nn.Linear(hidden_dim, n_classes)]
            else:
                layers = [nn.Dropout(dropout), nn.Linear(d_in, n_classes)]
            self.classifiers[task] = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {task: classifier(x) for task, classifier in self.classifiers.items()}

    def check_labels(self, labels: Any, batch_size: int) -> dict[str, Tensor]:
        """Validate ``labels`` (task → ``[B]`` long class indices or ``IGNORE_INDEX``)."""
        return check_class_labels(labels, self.tasks, batch_size)

    def losses(self, logits: Mapping[str, Tensor], labels: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-task mean cross-entropy (``IGNORE_INDEX`` labels skipped; 0 when a task has none).

        Written without a data-dependent branch (summed loss over the count of labelled samples),
        so that it compiles into one graph; the 0 of a task without labels stays in the graph
        (DDP needs every parameter's gradient)."""
        out = {}
        for task in self.tasks:
            y = labels[task]
            total = F.cross_entropy(logits[task].float(), y, ignore_index=IGNORE_INDEX, reduction="sum")
            out[task] = total / (y != IGNORE_INDEX).sum().clamp(min=1)
        return out
