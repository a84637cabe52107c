"""Multi-span decoding from start / end logits (Hu et al., ACL 2019, "Open-Domain Targeted
Sentiment Analysis via Span-Based Extraction and Classification", Algorithm 1).

A span extractor scores every word as the start (``g_s``) and as the end (``g_e``) of an aspect.
A sentence can hold several aspects, so the best (start, end) pair is not enough. The rule,
exactly as implemented by :func:`decode_spans`:

1. **Candidates.** Only real words take part (``word_mask``). ``S`` = the ``top_k`` real words
   with the highest start logits, ``E`` = the ``top_k`` real words with the highest end logits
   (ties: the lower word index first). Every pair ``(s, e)`` in ``S × E`` with ``s <= e``,
   length ``e - s + 1 <= max_span_len`` and only real words inside is a candidate with
   ``score = g_s[s] + g_e[e]``. Pairs with a non-finite score (a ``-inf`` logit) are never candidates.
2. **Threshold.** With ``threshold`` given, candidates with ``score < threshold`` are removed
   (Hu et al.'s minimum score γ, applied to ``g_s + g_e``).
3. **Greedy selection.** Candidates are visited by decreasing ranking value
   ``score - length_penalty * length`` (ties: shorter span, then earlier start); a candidate is
   kept when it overlaps no kept span (shares no word with it), until ``max_spans`` are kept.
4. The kept spans are returned sorted by start: ``[(start, end, score), ...]``, word indices,
   ``end`` **inclusive**, ``score = g_s[start] + g_e[end]`` (without the length penalty).

``length_penalty=0`` (default) ranks by ``g_s + g_e``, the score stated for JML. Hu et al.'s
heuristic ranking ("use_heuristics" in their code, github.com/huminghao16/SpanABSA) subtracts the
span length: ``length_penalty=1``. Their code also caps the output at ``top_k / 2`` spans
(``max_spans`` here) and removes overlapping spans while selecting, as in step 3.

With ``length_penalty=0`` the threshold commutes with the greedy selection: decoding with a
threshold keeps exactly the spans of the threshold-free decoding whose score reaches it, so a
threshold can be tuned on dev after decoding once with ``threshold=None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

Span = tuple[int, int, float]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _as_vector(value: object, name: str) -> Tensor:
    tensor = torch.as_tensor(value)
    if tensor.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D tensor [W], got shape {list(tensor.shape)}")
    return tensor


def decode_spans(
    start_logits: Tensor,
    end_logits: Tensor,
    word_mask: Tensor,
    *,
    top_k: int = 20,
    max_span_len: int = 10,
    threshold: float | None = None,
    max_spans: int = 8,
    length_penalty: float = 0.0,
) -> list[Span]:
    """Decode non-overlapping aspect spans of one sentence (rule in the module docstring).

    Args:
        start_logits, end_logits: ``[W]`` start / end scores of every word.
        word_mask: ``[W]`` bool, True for real words (padding words are never part of a span).
        top_k: start and end candidates considered (Hu et al.'s M, 20).
        max_span_len: longest span, in words.
        threshold: minimum ``start + end`` logit of a returned span (``None``: no minimum).
        max_spans: most spans returned.
        length_penalty: subtracted per word of length when ranking (1 = Hu et al.'s heuristic).

    Returns:
        ``[(start, end, score), ...]`` sorted by start; ``end`` inclusive; never overlapping.
    """
    start = _as_vector(start_logits, "start_logits").detach().to("cpu", torch.float64)
    end = _as_vector(end_logits, "end_logits").detach().to("cpu", torch.float64)
    mask = _as_vector(word_mask, "word_mask").detach().cpu()
    if not (start.shape == end.shape == mask.shape):
        raise ValueError(
            f"start_logits, end_logits and word_mask must have the same length [W], got "
            f"{list(start.shape)}, {list(end.shape)}, {list(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"word_mask: expected a bool tensor, got {mask.dtype}")
    top_k = _positive_int(top_k, "top_k")
    max_span_len = _positive_int(max_span_len, "max_span_len")
    max_spans = _positive_int(max_spans, "max_spans")
    if threshold is not None and (isinstance(threshold, bool) or math.isnan(float(threshold))):
        raise ValueError(f"threshold: expected a number or None, got {threshold!r}")
    if isinstance(length_penalty, bool) or not math.isfinite(float(length_penalty)):
        raise ValueError(f"length_penalty: expected a finite number, got {length_penalty!r}")
    real = mask.nonzero().flatten()
    if real.numel() == 0:
        return []
    for name, logits in (("start_logits", start), ("end_logits", end)):
        if bool(torch.isnan(logits[real]).any()):
            raise ValueError(f"{name}: NaN at a real word (word_mask True)")

    def top(logits: Tensor) -> Tensor:
        order = torch.sort(logits[real], descending=True, stable=True).indices
        return real[order[:top_k]]

    starts, ends = top(start)[:, None], top(end)[None, :]
    scores = start[starts] + end[ends]  # [k, k]
    length = ends - starts + 1
    padding_before = torch.cumsum(~mask, 0)  # spans may not contain a padding word
    contiguous = padding_before[ends] == padding_before[starts]
    ok = (length >= 1) & (length <= max_span_len) & contiguous & torch.isfinite(scores)
    if threshold is not None:
        ok &= scores >= float(threshold)
    s_idx, e_idx = starts.expand_as(scores)[ok].tolist(), ends.expand_as(scores)[ok].tolist()
    values = scores[ok].tolist()
    candidates = sorted(
        zip(s_idx, e_idx, values),
        key=lambda c: (-(c[2] - length_penalty * (c[1] - c[0] + 1)), c[1] - c[0], c[0]),
    )
    kept: list[Span] = []
    for s, e, score in candidates:
        if all(e < ks or s > ke for ks, ke, _ in kept):
            kept.append((s, e, score))
            if len(kept) == max_spans:
                break
    return sorted(kept)


def decode_spans_batch(
    start_logits: Tensor, end_logits: Tensor, word_mask: Tensor, **options: Any
) -> list[list[Span]]:
    """:func:`decode_spans` for every row of ``[B, W]`` logits and mask (one list of spans per row);
    ``options`` are :func:`decode_spans`' keyword arguments."""
    tensors: Sequence[Tensor] = [torch.as_tensor(t) for t in (start_logits, end_logits, word_mask)]
    for name, tensor in zip(("start_logits", "end_logits", "word_mask"), tensors):
        if tensor.dim() != 2:
            raise ValueError(f"{name}: expected a 2-D tensor [B, W], got shape {list(tensor.shape)}")
    start, end, mask = (t.detach().cpu() for t in tensors)
    if not (start.shape == end.shape == mask.shape):
        raise ValueError(
            f"start_logits, end_logits and word_mask must have the same shape [B, W], got "
            f"{list(start.shape)}, {list(end.shape)}, {list(mask.shape)}"
        )
    return [decode_spans(start[i], end[i], mask[i], **options) for i in range(start.shape[0])]
