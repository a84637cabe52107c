"""Evaluation metrics: classification (:mod:`~mmfuse.metrics.classification`) and streaming,
DDP-exact count-based metrics (:class:`~mmfuse.metrics.base.CountingMetric`)."""

from __future__ import annotations

from mmfuse.metrics.base import CountingMetric
from mmfuse.metrics.classification import (
    ClassificationMetrics,
    accuracy_from_confusion,
    classification_metrics,
    confusion_matrix,
    f1_from_confusion,
    metrics_from_confusion,
    per_class_f1,
)

__all__ = [
    "ClassificationMetrics",
    "CountingMetric",
    "accuracy_from_confusion",
    "classification_metrics",
    "confusion_matrix",
    "f1_from_confusion",
    "metrics_from_confusion",
    "per_class_f1",
]
