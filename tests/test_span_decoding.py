"""Multi-span decoding (Hu et al. 2019): hand cases, an independent list-based reference and
hypothesis properties (no overlaps, length limit, inside the real words, at most M, sorted)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfuse.models.jml.decoding import decode_spans, decode_spans_batch


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def ones(n):
    return torch.ones(n, dtype=torch.bool)


def reference(start, end, mask, top_k, max_span_len, threshold, max_spans, length_penalty):
    """The rule of the module docstring with plain lists."""
    start, end, mask = start.tolist(), end.tolist(), mask.tolist()
    real = [i for i, m in enumerate(mask) if m]
    starts = sorted(real, key=lambda i: (-start[i], i))[:top_k]
    ends = sorted(real, key=lambda i: (-end[i], i))[:top_k]
    candidates = []
    for s in starts:
        for e in ends:
            score = start[s] + end[e]
            if s <= e and e - s + 1 <= max_span_len and all(mask[s : e + 1]) and math.isfinite(score):
                if threshold is None or score >= threshold:
                    candidates.append((s, e, score))
    candidates.sort(key=lambda c: (-(c[2] - length_penalty * (c[1] - c[0] + 1)), c[1] - c[0], c[0]))
    chosen = []
    for s, e, score in candidates:
        if len(chosen) < max_spans and not any(s <= ke and ks <= e for ks, ke, _ in chosen):
            chosen.append((s, e, score))
    return sorted(chosen)


def test_two_separate_aspects():
    start, end = t([5, 0, 0, 4, 0]), t([0, 5, 0, 0, 4])
    assert decode_spans(start, end, ones(5), max_spans=2) == [(0, 1, 10.0), (3, 4, 8.0)]
    assert decode_spans(start, end, ones(5), max_spans=1) == [(0, 1, 10.0)]
    assert decode_spans(start, end, ones(5), threshold=9.0) == [(0, 1, 10.0)]
    assert decode_spans(start, end, ones(5), threshold=11.0) == []


def test_overlapping_candidates_are_suppressed_and_the_length_limit_applies():
    start, end = t([5, 4, 0]), t([0, 3, 6])
    assert decode_spans(start, end, ones(3)) == [(0, 2, 11.0)]  # (1, 2) = 10 and (0, 1) = 8 overlap it
    assert decode_spans(start, end, ones(3), max_span_len=2) == [(0, 0, 5.0), (1, 2, 10.0)]


def test_length_penalty_is_hu_et_al_heuristic():
    start, end = t([4, 0, 3]), t([0, 0, 4])
    assert decode_spans(start, end, ones(3)) == [(0, 2, 8.0)]
    # ranked by score - length: (2, 2) 7 - 1 = 6 before (0, 2) 8 - 3 = 5; the score returned is unpenalised
    assert decode_spans(start, end, ones(3), length_penalty=1.0, max_spans=2) == [(0, 0, 4.0), (2, 2, 7.0)]


def test_top_k_limits_the_candidates():
    start, end = t([3, 0, 2, 0]), t([0, 3, 0, 2])
    assert decode_spans(start, end, ones(4), top_k=2) == [(0, 1, 6.0), (2, 3, 4.0)]
    assert decode_spans(start, end, ones(4), top_k=1) == [(0, 1, 6.0)]


def test_padding_words_never_take_part():
    start, end = t([1, 0, 9, 9]), t([0, 1, 9, 9])
    mask = torch.tensor([True, True, False, False])
    assert decode_spans(start, end, mask) == [(0, 1, 2.0)]
    gap = torch.tensor([True, False, True])  # a span may not cross a padding word
    assert decode_spans(t([5, 0, 0]), t([0, 0, 5]), gap) == [(0, 0, 5.0), (2, 2, 5.0)]
    assert decode_spans(start, end, torch.zeros(4, dtype=torch.bool)) == []


def test_ties_prefer_shorter_then_earlier_spans_and_minus_inf_is_never_chosen():
    assert decode_spans(t([1, 1]), t([1, 1]), ones(2), max_spans=1) == [(0, 0, 2.0)]
    start, end = t([0, -math.inf, 0]), t([-math.inf, 0, 0])
    assert decode_spans(start, end, ones(3), max_spans=3) == [(0, 1, 0.0), (2, 2, 0.0)]


def test_a_threshold_keeps_the_spans_decoded_without_one_that_reach_it():
    torch.manual_seed(0)
    start, end, mask = torch.randn(30), torch.randn(30), ones(30)
    free = decode_spans(start, end, mask, max_spans=30)
    for threshold in (-2.0, -0.5, 0.0, 0.7, 1.5, 3.0):
        assert decode_spans(start, end, mask, threshold=threshold, max_spans=30) == [
            s for s in free if s[2] >= threshold
        ]


def test_batch_wrapper_decodes_every_row():
    torch.manual_seed(1)
    start, end = torch.randn(3, 7), torch.randn(3, 7)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [False] * 7])
    out = decode_spans_batch(start, end, mask, max_spans=3, max_span_len=2)
    assert out == [decode_spans(start[i], end[i], mask[i], max_spans=3, max_span_len=2) for i in range(3)]
    assert out[2] == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"start_logits": torch.zeros(3)}, ValueError, r"same length \[W\], got \[3\], \[4\], \[4\]"),
        ({"word_mask": torch.ones(4)}, TypeError, "word_mask: expected a bool tensor"),
        ({"start_logits": torch.zeros(2, 2)}, ValueError, r"start_logits: expected a 1-D tensor \[W\]"),
        ({"top_k": 0}, ValueError, "top_k: expected a positive int, got 0"),
        ({"max_span_len": 1.5}, ValueError, "max_span_len: expected a positive int"),
        ({"max_spans": True}, ValueError, "max_spans: expected a positive int"),
        ({"threshold": float("nan")}, ValueError, "threshold: expected a number or None"),
        ({"length_penalty": math.inf}, ValueError, "length_penalty: expected a finite number"),
        ({"end_logits": t([0, float("nan"), 0, 0])}, ValueError, r"end_logits: NaN at a real word"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    args = {"start_logits": torch.zeros(4), "end_logits": torch.zeros(4), "word_mask": ones(4), **kwargs}
    with pytest.raises(error, match=message):
        decode_spans(args.pop("start_logits"), args.pop("end_logits"), args.pop("word_mask"), **args)


def test_batch_wrapper_checks_shapes():
    with pytest.raises(ValueError, match=r"start_logits: expected a 2-D tensor \[B, W\]"):
        decode_spans_batch(torch.zeros(4), torch.zeros(4), ones(4))
    with pytest.raises(ValueError, match=r"same shape \[B, W\]"):
        decode_spans_batch(torch.zeros(2, 4), torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))


@st.composite
def decoding_cases(draw):
    n = draw(st.integers(1, 14))
    # small integers make ties frequent; floats cover the general case
    values = st.integers(-4, 4).map(float) | st.floats(-5, 5, allow_nan=False, width=32)
    start = t(draw(st.lists(values, min_size=n, max_size=n)))
    end = t(draw(st.lists(values, min_size=n, max_size=n)))
    mask = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=torch.bool)
    options = {
        "top_k": draw(st.integers(1, 16)),
        "max_span_len": draw(st.integers(1, 6)),
        "threshold": draw(st.none() | st.floats(-6, 6, allow_nan=False)),
        "max_spans": draw(st.integers(1, 8)),
        "length_penalty": draw(st.sampled_from([0.0, 0.0, 1.0, 0.5])),
    }
    return start, end, mask, options


@settings(max_examples=150, deadline=None)
@given(decoding_cases())
def test_decoding_properties(case):
    start, end, mask, options = case
    spans = decode_spans(start, end, mask, **options)
    assert spans == reference(start, end, mask, **options)
    assert len(spans) <= options["max_spans"]
    assert spans == sorted(spans)
    for (s1, e1, _), (s2, _, _) in zip(spans, spans[1:]):
        assert e1 < s2  # sorted and never overlapping
    for s, e, score in spans:
        assert 0 <= s <= e < mask.numel() and e - s + 1 <= options["max_span_len"]
        assert bool(mask[s : e + 1].all())
        assert score == float(start[s].double() + end[e].double())
        assert options["threshold"] is None or score >= options["threshold"]


@settings(max_examples=60, deadline=None)
@given(decoding_cases())
def test_one_span_with_all_candidates_is_the_best_valid_pair(case):
    start, end, mask, options = case
    n = mask.numel()
    (best,) = decode_spans(start, end, mask | True, top_k=n, max_span_len=n, max_spans=1) or [None]
    assert best is not None
    assert best[2] == max(float(start[s].double() + end[e].double()) for s in range(n) for e in range(s, n))


def test_batch_wrapper_rejects_unknown_options():
    with pytest.raises(TypeError, match="top_n"):
        decode_spans_batch(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), top_n=3)
