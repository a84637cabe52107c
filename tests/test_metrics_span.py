"""Joint / MATE / MASC span metrics against hand-computed cases."""

from __future__ import annotations

import dataclasses

import pytest

from mmfuse.data.datasets.twitter import Aspect
from mmfuse.metrics.span import SPAN_METRICS, SpanCounts, SpanMetrics, count_spans, span_metrics

GOLD = [[(0, 1, 2), (3, 4, 1), (6, 6, 0)], [(2, 2, 1)], []]
PRED = [
    [(0, 1, 2), (3, 4, 0), (5, 5, 1)],  # exact + right polarity; exact span, wrong polarity; spurious
    [(1, 2, 1)],  # boundary off by one: no credit, even with the right polarity
    [(0, 0, 1)],  # prediction in a sentence without gold
]


def test_hand_computed_case():
    m = span_metrics(PRED, GOLD)
    # 5 predicted, 4 gold, 2 exact spans, 1 of them with the right polarity
    assert (m["n_pred"], m["n_gold"], m["n_span_correct"], m["n_joint_correct"]) == (5, 4, 2, 1)
    assert m["joint_p"] == pytest.approx(1 / 5) and m["joint_r"] == pytest.approx(1 / 4)
    assert m["joint_f1"] == pytest.approx(2 * (1 / 5) * (1 / 4) / (1 / 5 + 1 / 4))  # 2/9
    assert m["mate_p"] == pytest.approx(2 / 5) and m["mate_r"] == pytest.approx(2 / 4)
    assert m["mate_f1"] == pytest.approx(4 / 9)
    assert m["masc_acc"] == pytest.approx(1 / 2)
    assert list(m) == list(SPAN_METRICS)


def test_perfect_and_empty_cases():
    perfect = span_metrics(GOLD, GOLD)
    assert all(perfect[k] == 1.0 for k in ("joint_p", "joint_r", "joint_f1", "mate_f1", "masc_acc"))
    nothing = span_metrics([[], [], []], GOLD)  # no predictions: every ratio with a zero denominator is 0
    assert nothing["joint_p"] == nothing["joint_r"] == nothing["joint_f1"] == nothing["masc_acc"] == 0.0
    no_gold = span_metrics([[(0, 0, 1)]], [[]])
    assert no_gold["mate_p"] == no_gold["mate_r"] == no_gold["mate_f1"] == 0.0 and no_gold["n_pred"] == 1


def test_right_spans_all_wrong_polarity():
    m = span_metrics([[(0, 0, 0), (2, 3, 0)]], [[(0, 0, 2), (2, 3, 1)]])
    assert m["mate_f1"] == 1.0 and m["joint_f1"] == 0.0 and m["masc_acc"] == 0.0


def test_order_of_aspects_does_not_matter_and_objects_are_accepted():
    @dataclasses.dataclass
    class Prediction:  # like JML's AspectPrediction
        start: int
        end: int
        polarity: int
        score: float = 0.0

    shuffled = [[Prediction(6, 6, 0), Prediction(0, 1, 2)], [], []]
    gold = [[Aspect(0, 1, 2, "a b"), Aspect(3, 4, 1, "c d"), Aspect(6, 6, 0, "e")], [Aspect(2, 2, 1, "f")], []]
    assert count_spans(shuffled, gold) == SpanCounts(n_pred=2, n_gold=4, n_span_correct=2, n_joint_correct=2)


def test_streaming_equals_one_shot():
    metric = SpanMetrics()
    assert metric.update(PRED[:1], GOLD[:1]) == SpanCounts(3, 3, 2, 1)
    metric.update(PRED[1:], GOLD[1:])
    assert metric.compute() == span_metrics(PRED, GOLD)
    assert SpanCounts(3, 3, 2, 1) + SpanCounts(2, 1, 0, 0) == metric.counts
    metric.reset()
    assert metric.counts == SpanCounts()


@pytest.mark.parametrize(
    ("pred", "gold", "error", "message"),
    [
        ([[]], [[], []], ValueError, "differ in length: 1 vs 2 sentences"),
        ([[(0, 1, 1), (0, 1, 2)]], [[]], ValueError, r"predictions\[0\]: span \(0, 1\) appears more than once"),
        ([[]], [[(2, 1, 0)]], ValueError, r"golds\[0\]\[0\]: span \(2, 1\) must satisfy 0 <= start <= end"),
        ([[(0, 1)]], [[]], ValueError, r"predictions\[0\]\[0\]: expected \(start, end, polarity\)"),
        ([[(0, 1.0, 1)]], [[]], TypeError, "must be ints"),
        ([[3]], [[]], TypeError, r"predictions\[0\]\[0\]: expected \(start, end, polarity\), got 3"),
        (["abc"], [[]], TypeError, r"predictions\[0\]: expected a list of aspects, got str"),
    ],
)
def test_bad_inputs(pred, gold, error, message):
    with pytest.raises(error, match=message):
        span_metrics(pred, gold)
