"""Evaluation metrics: classification (:mod:`~mmfuse.metrics.classification`, torchmetrics) and streaming,
DDP-exact count-based metrics (:class:`~mmfuse.metrics.base.CountingMetric`, used by the span metrics)."""

from __future__ import annotations

from mmfuse.metrics.base import CountingMetric
from mmfuse.metrics.classification import (
    ClassificationMetrics,
    classification_metrics,
    confusion_matrix,
    per_class_f1,
)

__all__ = [
    "ClassificationMetrics",
    "CountingMetric",
    "classification_metrics",
    "confusion_matrix",
    "per_class_f1",
]
