"""Output dataclasses shared by mmfuse models (what ``model(batch)`` returns).

Architecture-specific outputs live with their model (e.g. :class:`mmfuse.models.jml.outputs.JMLOutput`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor

from mmfuse.core.features import Features


@dataclass
class ModelOutput:
    """Fields every mmfuse model output has.

    Attributes:
        loss: the total (weighted) training loss, or None when the batch had no labels.
        losses: named loss components for logging (e.g. ``{"sentiment": ..., "itc": ...}``).
        text_features / image_features: unimodal features, reused by auxiliary losses.
    """

    loss: Optional[Tensor] = None
    losses: dict[str, Tensor] = field(default_factory=dict)
    text_features: Optional[Features] = None
    image_features: Optional[Features] = None


@dataclass
class ClassificationOutput(ModelOutput):
    """Output of multimodal (multi-task) classifiers such as RADM.

    Attributes:
        logits: task name → ``[B, n_classes]``.
        text_pooled / image_pooled: ``[B, d]`` pooled vectors of each modality after fusion.
        fused: ``[B, d_fused]`` the concatenated representation the heads read.
        attentions: score stream (``"tt"``, ``"ii"``, ``"ti"``, ``"it"``, ...) → one
            ``[B, H, Lq, Lk]`` tensor per layer; only when requested.
    """

    logits: dict[str, Tensor] = field(default_factory=dict)
    text_pooled: Optional[Tensor] = None
    image_pooled: Optional[Tensor] = None
    fused: Optional[Tensor] = None
    attentions: Optional[dict[str, list[Tensor]]] = None
