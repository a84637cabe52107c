"""Output dataclasses of mmfuse models (what ``model(batch)`` returns).

Outputs behave like Hugging Face's ``transformers.utils.ModelOutput``: attribute access
(``out.logits``), key access over the fields that are set (``out["logits"]``, ``"loss" in out``,
``keys()`` / ``values()`` / ``items()``), integer indexing and :meth:`ModelOutput.to_tuple`
skip ``None`` fields. Each output class is registered as a pytree node (like HF's), so
``torch.compile`` / ``torch.export`` / DDP see its tensors.

They do not subclass HF's class: that one is a ``dict`` (code that treats dicts as batches,
e.g. moving them to a device or collating, would take an output for a batch), it requires
every field but the first to default to ``None`` (``logits`` / ``losses`` default to empty
dicts here, which the trainer and the losses iterate), and its ``__post_init__`` reinterprets
the first field as a key/value iterable when the others are unset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import torch.utils._pytree as pytree
from torch import Tensor

from mmfuse.models.protocol import Features


def _flatten(output: "ModelOutput") -> tuple[list[Any], list[str]]:
    names = [f.name for f in dataclasses.fields(output)]
    return [getattr(output, name) for name in names], names


def _unflatten(values: Any, names: Any, cls: type) -> "ModelOutput":
    return cls(**dict(zip(names, values)))


def _flatten_with_keys(output: "ModelOutput") -> tuple[list[tuple[Any, Any]], list[str]]:
    values, names = _flatten(output)
    return [(pytree.GetAttrKey(name), value) for name, value in zip(names, values)], names


def _register(cls: type) -> None:
    if cls in pytree.SUPPORTED_NODES:
        return
    pytree.register_pytree_node(
        cls, _flatten, lambda values, names: _unflatten(values, names, cls),
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}", flatten_with_keys_fn=_flatten_with_keys,
    )


_register(Features)  # the unimodal features outputs carry are a pytree of three tensors


class OutputAccess:
    """Key / index access over the fields that are not None, as HF's ``ModelOutput`` has."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # registered once the dataclass decorator has run (fields are needed only at flatten time)
        _register(cls)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in declaration order (HF's ``to_tuple``)."""
        return tuple(self.values())

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
                raise KeyError(f"{key!r} (set fields: {self.keys()}; all fields: {names})")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def __iter__(self) -> Iterator[str]:
        """Iterates over the set field names, like a dict (HF outputs do the same)."""
        return iter(self.keys())


@dataclass
class ModelOutput(OutputAccess):
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

