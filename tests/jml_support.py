"""Test helpers for JML: batches in the joint span interface, built independently of the collator.

``make_span_batch`` tokenises pre-split words with the model's tokenizer (``is_split_into_words``)
and takes each word's first sub-token from ``word_ids()``; it is a small reference for the
interface produced by :class:`mmfuse.data.twitter.JointSpanCollator`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

#: (words, [(start, end inclusive, polarity)]) — a few tweets with multi-word, adjacent and mixed aspects
TWEETS: list[tuple[list[str], list[tuple[int, int, int]]]] = [
    ("RT @ ltsChuckBass : Chuck Bass is everything # MCM".split(), [(4, 5, 2), (8, 9, 1)]),
    ("Millions For Trayvon September 7 - Shut Down New York City".split(), [(0, 2, 1), (8, 10, 0)]),
    ("LeBron James and Johnny Football Browns fans".split(), [(0, 1, 1), (3, 3, 1), (4, 5, 2)]),
    ("Great night with Obama in Chicago".split(), [(3, 3, 2), (5, 5, 1)]),
    ("Apple stock falls after weak iPhone sales".split(), [(0, 0, 0), (6, 6, 0)]),
    ("Watching Arsenal tonight".split(), [(1, 1, 1)]),
]


def make_span_batch(tokenizer: Any, tweets: Sequence[tuple[list[str], list[tuple[int, int, int]]]],
                    image_size: int | None = None, labels: bool = True, seed: int = 0) -> dict[str, Any]:
    """A JML batch dict for ``tweets`` (and random ``pixel_values`` of ``image_size`` when given)."""
    words = [list(w) for w, _ in tweets]
    enc = tokenizer(words, is_split_into_words=True, padding="longest", truncation=True, return_tensors="pt")
    n_words = max(len(w) for w in words)
    word_starts = torch.zeros(len(tweets), n_words, dtype=torch.long)
    word_mask = torch.zeros(len(tweets), n_words, dtype=torch.bool)
    for i in range(len(tweets)):
        seen = set()
        for position, word_id in enumerate(enc.word_ids(i)):
            if word_id is not None and word_id not in seen:
                seen.add(word_id)
                word_starts[i, word_id] = position
                word_mask[i, word_id] = True
    batch: dict[str, Any] = {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long(),
                             "word_starts": word_starts, "word_mask": word_mask, "words": words}
    if "token_type_ids" in enc:
        batch["token_type_ids"] = enc["token_type_ids"].long()
    if labels:
        n_spans = max(1, max(len(a) for _, a in tweets))
        spans = torch.zeros(len(tweets), n_spans, 2, dtype=torch.long)
        span_mask = torch.zeros(len(tweets), n_spans, dtype=torch.bool)
        polarity = torch.full((len(tweets), n_spans), -100, dtype=torch.long)
        start_labels = torch.zeros(len(tweets), n_words)
        end_labels = torch.zeros(len(tweets), n_words)
        for i, (_, aspects) in enumerate(tweets):
            for j, (s, e, p) in enumerate(aspects):
                spans[i, j] = torch.tensor([s, e])
                span_mask[i, j] = True
                polarity[i, j] = p
                start_labels[i, s] = 1.0
                end_labels[i, e] = 1.0
        batch.update(spans=spans, span_mask=span_mask, span_polarity=polarity, start_labels=start_labels,
                     end_labels=end_labels)
    if image_size is not None:
        generator = torch.Generator().manual_seed(seed)
        batch["pixel_values"] = torch.randn(len(tweets), 3, image_size, image_size, generator=generator)
    return batch
