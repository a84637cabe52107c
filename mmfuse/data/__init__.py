"""Data sets, readers and collators for multimodal classification.

Every data set yields raw samples ``{"id", "text", "image" (PIL or None), "labels": {task: int}}``;
:class:`~mmfuse.data.collators.classification.ClassificationCollator` turns a list of them into a batch with the
model's processor. :func:`~mmfuse.data.datasets.build_dataset` builds any registered data set by
name (``synthetic``, ``mvsa-single``, ``mvsa-multiple``, ``mvsa-json``, ``msed``, ``trc``,
``twitter2015``, ``twitter2017``). Joint aspect-span samples (``twitter2015`` / ``twitter2017`` with
``form="jmasa"``) are batched by :class:`~mmfuse.data.collators.jmasa.JMASACollator`.
"""

from __future__ import annotations

from mmfuse.data.datasets.base import ClassificationDataset, ParseReport, Record, RecordDataset, SkippedItem
from mmfuse.data.collators.classification import ClassificationCollator
from mmfuse.data.datasets import build_dataset, list_datasets
from mmfuse.data.images import BadImageError, check_image, load_image
from mmfuse.data.datasets.synthetic import SYNTHETIC_VOCABULARY, SyntheticDataset, bayes_ceilings

__all__ = [
    "SYNTHETIC_VOCABULARY",
    "BadImageError",
    "ClassificationCollator",
    "ClassificationDataset",
    "ParseReport",
    "Record",
    "RecordDataset",
    "SkippedItem",
    "SyntheticDataset",
    "bayes_ceilings",
    "build_dataset",
    "check_image",
    "list_datasets",
    "load_image",
]
