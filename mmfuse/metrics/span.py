"""Metrics of joint aspect-term extraction and aspect sentiment (JMASA): joint, MATE and MASC.

Every sentence has a set of predicted aspects and a set of gold aspects, each aspect a triple
``(start, end, polarity)`` of word indices (``end`` inclusive) and a polarity class. Matches are
**exact at the word level**: a predicted span counts only when both of its boundaries equal those
of a gold span. Counted over the whole evaluation set (micro averages):

* ``n_pred`` / ``n_gold``: predicted / gold aspects;
* ``n_span_correct``: predicted aspects whose span equals a gold span;
* ``n_joint_correct``: predicted aspects whose span **and** polarity equal a gold aspect's.

From these counts:

* **joint** (the JMASA score): ``P = n_joint_correct / n_pred``, ``R = n_joint_correct / n_gold``,
  ``F1 = 2PR / (P + R)``;
* **MATE** (extraction only): the same with ``n_span_correct``;
* **MASC** accuracy **on correctly extracted spans**: ``n_joint_correct / n_span_correct``, the
  polarity accuracy over the predicted spans that exactly match a gold span.

Conventions: a ratio with a zero denominator is 0 (no predictions → P = 0; no gold → R = 0;
P + R = 0 → F1 = 0; no correct span → MASC = 0). A span may appear at most once among a
sentence's predictions and at most once among its gold aspects (one polarity per span); a
repeated span is an error. Values are fractions in [0, 1].
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

Triple = tuple[int, int, int]

#: keys of :meth:`SpanCounts.compute`, in order
SPAN_METRICS: tuple[str, ...] = (
    "joint_p", "joint_r", "joint_f1", "mate_p", "mate_r", "mate_f1", "masc_acc",
    "n_pred", "n_gold", "n_span_correct", "n_joint_correct",
)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _prf(correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    precision, recall = _ratio(correct, n_pred), _ratio(correct, n_gold)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def as_triple(aspect: Any, where: str) -> Triple:
    """``(start, end, polarity)`` from a 3-sequence or an object with ``start``, ``end``, ``polarity``
    attributes (e.g. :class:`mmfuse.data.datasets.twitter.Aspect`, JML's ``AspectPrediction``)."""
    if all(hasattr(aspect, name) for name in ("start", "end", "polarity")):
        values = (aspect.start, aspect.end, aspect.polarity)
    else:
        try:
            values = tuple(aspect)
        except TypeError:
            raise TypeError(f"{where}: expected (start, end, polarity), got {aspect!r}") from None
        if len(values) != 3:
            raise ValueError(f"{where}: expected (start, end, polarity), got {aspect!r}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{where}: start, end and polarity must be ints, got {values!r}")
    start, end, polarity = (int(v) for v in values)
    if not 0 <= start <= end:
        raise ValueError(f"{where}: span ({start}, {end}) must satisfy 0 <= start <= end (end inclusive)")
    return start, end, polarity


def _sentence(aspects: Iterable[Any], where: str) -> dict[tuple[int, int], int]:
    if isinstance(aspects, (str, bytes)) or not isinstance(aspects, Iterable):
        raise TypeError(f"{where}: expected a list of aspects, got {type(aspects).__name__}")
    spans: dict[tuple[int, int], int] = {}
    for k, aspect in enumerate(aspects):
        start, end, polarity = as_triple(aspect, f"{where}[{k}]")
        if (start, end) in spans:
            raise ValueError(f"{where}: span ({start}, {end}) appears more than once (one polarity per span)")
        spans[(start, end)] = polarity
    return spans


@dataclasses.dataclass
class SpanCounts:
    """The four counts of the module docstring; add them up across batches or processes with ``+``."""

    n_pred: int = 0
    n_gold: int = 0
    n_span_correct: int = 0
    n_joint_correct: int = 0

    def __add__(self, other: SpanCounts) -> SpanCounts:
        return SpanCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def compute(self) -> dict[str, float]:
        """All metrics (keys :data:`SPAN_METRICS`): joint / MATE P, R, F1, MASC accuracy and the counts."""
        joint = _prf(self.n_joint_correct, self.n_pred, self.n_gold)
        mate = _prf(self.n_span_correct, self.n_pred, self.n_gold)
        return {
            "joint_p": joint[0], "joint_r": joint[1], "joint_f1": joint[2],
            "mate_p": mate[0], "mate_r": mate[1], "mate_f1": mate[2],
            "masc_acc": _ratio(self.n_joint_correct, self.n_span_correct),
            **dataclasses.asdict(self),
        }


def count_spans(predictions: Sequence[Iterable[Any]], golds: Sequence[Iterable[Any]]) -> SpanCounts:
    """Counts over sentences: ``predictions[i]`` and ``golds[i]`` are the aspects of sentence ``i``."""
    if len(predictions) != len(golds):
        raise ValueError(f"predictions and golds differ in length: {len(predictions)} vs {len(golds)} sentences")
    counts = SpanCounts()
    for i, (predicted, gold) in enumerate(zip(predictions, golds)):
        pred = _sentence(predicted, f"predictions[{i}]")
        true = _sentence(gold, f"golds[{i}]")
        matched = pred.keys() & true.keys()
        counts.n_pred += len(pred)
        counts.n_gold += len(true)
        counts.n_span_correct += len(matched)
        counts.n_joint_correct += sum(pred[span] == true[span] for span in matched)
    return counts


def span_metrics(predictions: Sequence[Iterable[Any]], golds: Sequence[Iterable[Any]]) -> dict[str, float]:
    """Joint / MATE P, R, F1 and MASC accuracy of ``predictions`` against ``golds`` (module docstring)."""
    return count_spans(predictions, golds).compute()


class SpanMetrics:
    """Streaming version: ``update(predictions, golds)`` per batch, ``compute()`` at the end."""

    def __init__(self) -> None:
        self.counts = SpanCounts()

    def update(self, predictions: Sequence[Iterable[Any]], golds: Sequence[Iterable[Any]]) -> SpanCounts:
        """Add one batch; returns that batch's counts."""
        batch = count_spans(predictions, golds)
        self.counts = self.counts + batch
        return batch

    def compute(self) -> dict[str, float]:
        return self.counts.compute()

    def reset(self) -> None:
        self.counts = SpanCounts()
