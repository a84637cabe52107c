"""Output dataclasses of mmfuse models (what ``model(batch)`` returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from mmfuse.models.protocol import Features


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


@dataclass
class AspectPrediction:
    """One extracted aspect of a tweet: word indices (``end`` inclusive), polarity and scores.

    ``score`` is the decoding score (start + end logit), ``probability`` the polarity's softmax
    probability; ``term`` is the aspect's words joined by spaces when the batch had ``words``.
    """

    start: int
    end: int
    polarity: int
    polarity_name: str
    score: float
    probability: float
    term: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "term": self.term, "polarity": self.polarity_name,
                "polarity_index": self.polarity, "probability": round(self.probability, 6),
                "score": round(self.score, 6)}


@dataclass
class JointSpanOutput(ModelOutput):
    """Output of joint aspect-term extraction + aspect sentiment models such as JML.

    Attributes:
        start_logits / end_logits: ``[B, W]`` boundary scores of every word (padded words get a
            large negative value).
        word_mask: ``[B, W]`` bool, True for real words.
        polarity_logits: ``[B, S, n_polarities]`` for the batch's ``spans`` (None without spans).
        relation_prob: ``[B]`` probability that the image adds to the text (None without a
            relation module).
        relation_gate: ``[B]`` the gate applied to the regions (``relation_prob`` when soft, 0/1 when hard).
        word_states: ``[B, W, d]`` the word states the span heads read (JML's ``H_a``).
        regions: ``[B, R, d]`` the gated region features (None for text-only models).
        region_mask: ``[B, R]`` bool, True for real regions.
        predictions: per tweet, the decoded aspects with their polarities (JML fills it in eval
            mode, see ``JML.forward``); None in training mode.
    """

    start_logits: Optional[Tensor] = None
    end_logits: Optional[Tensor] = None
    word_mask: Optional[Tensor] = None
    polarity_logits: Optional[Tensor] = None
    relation_prob: Optional[Tensor] = None
    relation_gate: Optional[Tensor] = None
    word_states: Optional[Tensor] = None
    regions: Optional[Tensor] = None
    region_mask: Optional[Tensor] = None
    predictions: Optional[list[list[AspectPrediction]]] = None

    def decode(self, *, top_k: int = 20, max_span_len: int = 10, threshold: Optional[float] = None,
               max_spans: int = 8, length_penalty: float = 1.0) -> list[list[tuple[int, int, float]]]:
        """Multi-span decoding of every tweet: ``[(start, end, score), ...]`` per row, word indices,
        ``end`` inclusive (see :func:`mmfuse.models.span_decoding.decode_spans`). The default
        ``length_penalty=1`` is Hu et al.'s heuristic ranking: without it a span covering two
        adjacent aspects scores as high as each of them and can swallow both."""
        from mmfuse.models.span_decoding import decode_spans_batch

        if self.start_logits is None or self.end_logits is None or self.word_mask is None:
            raise ValueError("decode: the output has no start_logits / end_logits / word_mask")
        return decode_spans_batch(self.start_logits.float(), self.end_logits.float(), self.word_mask, top_k=top_k,
                                  max_span_len=max_span_len, threshold=threshold, max_spans=max_spans,
                                  length_penalty=length_penalty)


# Pytree nodes, so that torch.export (and anything flattening outputs: torch.compile, DDP) sees
# the tensors inside; the names make an exported program's output spec serialisable.
for _cls in (ModelOutput, ClassificationOutput, JointSpanOutput):
    torch.export.register_dataclass(_cls, serialized_type_name=f"mmfuse.models.outputs.{_cls.__name__}")
