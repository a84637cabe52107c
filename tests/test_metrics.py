"""Classification metrics vs hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score

from mmfuse.metrics import ClassificationMetrics, classification_metrics, confusion_matrix, per_class_f1


def test_hand_computed_three_classes():
    # true 0 0 1 1 2 2 / pred 0 1 1 1 2 0 -> per-class F1 = 2/4, 4/5, 2/3
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], 3)
    assert m["accuracy"] == 1.0  # same list twice: perfect
    cm = confusion_matrix([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_allclose(per_class_f1([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2], 3), [0.5, 0.8, 2 / 3])
    m = classification_metrics([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2], 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # equal supports


def test_weighted_differs_from_macro_and_absent_classes_are_ignored():
    # true 0 0 0 1 / pred 0 0 1 1: F1 = 4/5 (support 3) and 2/3 (support 1); class 2 never occurs
    m = classification_metrics(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]), 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 / 3) / 4)
    # a class that is predicted but never true counts in macro (F1 = 0) but not in weighted
    m = classification_metrics([2, 0], [0, 0], 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["weighted_f1"] == pytest.approx(2 / 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5).flatmap(lambda c: st.tuples(st.just(c), st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, c - 1)), min_size=1, max_size=40))))
def test_matches_sklearn(case):
    n_classes, pairs = case
    y_true, y_pred = (np.array(v) for v in zip(*pairs))
    m = classification_metrics(y_pred, y_true, n_classes)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for average in ("macro", "weighted"):
        expected = f1_score(y_true, y_pred, average=average, zero_division=0)
        assert m[f"{average}_f1"] == pytest.approx(expected)


def test_streaming_multitask_equals_one_shot():
    rng = np.random.default_rng(0)
    tasks = {"a": 3, "b": 2}
    metric = ClassificationMetrics(tasks)
    all_pred, all_true = {t: [] for t in tasks}, {t: [] for t in tasks}
    for _ in range(4):
        logits = {t: torch.randn(7, n) for t, n in tasks.items()}
        labels = {t: torch.from_numpy(rng.integers(0, n, 7)) for t, n in tasks.items()}
        metric.update(logits, labels)
        for t in tasks:
            all_pred[t] += logits[t].argmax(-1).tolist()
            all_true[t] += labels[t].tolist()
    out = metric.compute()
    for t, n in tasks.items():
        expected = classification_metrics(all_pred[t], all_true[t], n)
        assert {k: out[f"{t}/{k}"] for k in expected} == pytest.approx(expected)
    assert out["macro_f1"] == pytest.approx((out["a/macro_f1"] + out["b/macro_f1"]) / 2)
    np.testing.assert_array_equal(metric.confusion("b"), confusion_matrix(all_pred["b"], all_true["b"], 2))
    metric.reset()
    assert int(metric.confusion("a").sum()) == 0 and metric.compute()["accuracy"] == 0.0
    logits, labels = {"a": torch.eye(3), "b": torch.eye(2)[[0, 1, 1]]}, {"a": torch.tensor([0, 1, 0]),
                                                                           "b": torch.tensor([0, 1, -100])}
    metric.update(logits, labels)  # -100: no label for that task, skipped
    out = metric.compute()
    assert out["a/accuracy"] == pytest.approx(2 / 3) and out["b/accuracy"] == 1.0
    assert int(metric.confusion("b").sum()) == 2


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"labels: class indices must be in \[0, 2\)"):
        confusion_matrix([0, 1], [0, 2], 2)
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(TypeError, match="predictions: expected integer"):
        confusion_matrix([0.5], [0], 2)
    metric = ClassificationMetrics({"sentiment": 3})
    with pytest.raises(KeyError, match="logits: no entry for task 'sentiment'"):
        metric.update({"other": torch.zeros(1, 3)}, {"sentiment": torch.zeros(1, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"logits\['sentiment'\]: expected 3 classes"):
        metric.update({"sentiment": torch.zeros(1, 2)}, {"sentiment": torch.zeros(1, dtype=torch.long)})
