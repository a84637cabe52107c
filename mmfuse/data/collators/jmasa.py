"""Batches for joint multimodal aspect-sentiment analysis (JMASA): words, aspect spans, images.

:class:`JMASACollator` turns jmasa-form samples (:class:`~mmfuse.data.datasets.twitter.TwitterJMASADataset`,
or any dict with ``"words"``) into the batch that span models such as JML consume:

=================== ============== ===========================================================
key                 shape / type   meaning
=================== ============== ===========================================================
``input_ids``       [B, L] long    sub-tokens of the words (special tokens included)
``attention_mask``  [B, L] long    1 = real sub-token
``token_type_ids``  [B, L] long    only when the tokenizer produces them
``word_starts``     [B, W] long    index of each word's first sub-token; 0 for padding words
``word_mask``       [B, W] bool    True for real (kept) words
``start_labels``    [B, W] float   multi-hot: 1 where a gold aspect starts
``end_labels``      [B, W] float   multi-hot: 1 where a gold aspect ends
``spans``           [B, S, 2] long gold spans (start word, end word inclusive); 0 for padding
``span_mask``       [B, S] bool    True for real spans
``span_polarity``   [B, S] long    0 negative / 1 neutral / 2 positive; -100 for padding
``pixel_values``    [B, 3, H, W]   only with ``image_transform``
``image_mask``      [B] bool       only when a placeholder image was used (``missing_image="blank"``)
``relation_labels`` [B] long       only when every sample has ``"relation_label"`` (1 = image adds)
``words``           list[list[str]] the samples' words (all of them, for decoding and printing)
``ids``             list[str]      only with ``return_ids=True``
=================== ============== ===========================================================

The label keys (``start_labels`` ... ``span_polarity``) are present when the samples carry
``"aspects"`` (training / evaluation); prediction inputs without ``"aspects"`` give a batch
without them. ``W`` is the largest number of kept words in the batch, ``S`` the largest number of
kept spans (at least 1), or ``max_spans`` when given.

**Truncation.** Sub-tokens beyond ``max_length`` are cut; a word whose first sub-token is cut is
not kept (``word_mask`` False) and every span ending in such a word is dropped. Spans beyond
``max_spans`` are dropped too. Both are counted (:attr:`JMASACollator.truncated_words`,
``truncated_samples``, ``dropped_spans``) and reported by one warning, the first time they happen.

**Images.** Without ``image_transform`` the batch has no ``pixel_values`` (text-only models such as
``jml-base-text``) and sample images are ignored. With it, every sample needs an image: a sample
without one is an error naming it, unless ``missing_image="blank"`` is asked for explicitly — then
a black placeholder is used and ``image_mask`` marks the real images (the image policy of
:class:`~mmfuse.data.collators.classification.ClassificationCollator`, made opt-in here because a joint model would
otherwise silently train on black images). ``None`` samples (``on_bad_image="skip"``) are dropped
and counted in :attr:`JMASACollator.dropped`; a batch of only ``None`` gives ``None``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor

from mmfuse.data.collators.word_alignment import WordAlignment, align_words_batch

IGNORE_INDEX = -100
MissingImage = Literal["error", "blank"]
ImageTransform = Callable[[Image.Image], Tensor]


def _positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int{' or None' if allow_none else ''}, got {value!r}")


class JMASACollator:
    """``collate(samples) -> batch`` for :class:`torch.utils.data.DataLoader` (see the module docstring).

    Args:
        tokenizer: a Hugging Face tokenizer (fast, or slow with ``prepare_for_model``).
        image_transform: ``PIL.Image -> FloatTensor [3, H, W]`` (e.g. a timm transform); ``None``
            for text-only models.
        max_length: most sub-tokens per tweet, special tokens included.
        max_spans: fixed ``S`` (spans beyond it are dropped); ``None``: the batch's largest count.
        missing_image: ``"error"`` (default) or ``"blank"`` (black placeholder + ``image_mask``).
        blank_image_size: side of the placeholder before ``image_transform``.
        num_polarities: polarity classes; aspect polarities must be in ``[0, num_polarities)``.
        return_ids: also put ``batch["ids"]``.
        use_word_ids: alignment path, see :func:`~mmfuse.data.collators.word_alignment.align_words`.
    """

    def __init__(
        self,
        tokenizer: Any,
        image_transform: ImageTransform | None = None,
        max_length: int = 128,
        max_spans: int | None = None,
        *,
        missing_image: MissingImage = "error",
        blank_image_size: int = 224,
        num_polarities: int = 3,
        return_ids: bool = False,
        use_word_ids: bool | None = None,
    ) -> None:
        if not callable(tokenizer):
            raise TypeError(f"tokenizer: expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError(f"tokenizer: {type(tokenizer).__name__} has no pad_token_id to pad batches with")
        if image_transform is not None and not callable(image_transform):
            raise TypeError(
                f"image_transform: expected a callable PIL.Image -> Tensor, got {type(image_transform).__name__}"
            )
        _positive_int(max_length, "max_length")
        _positive_int(max_spans, "max_spans", allow_none=True)
        _positive_int(blank_image_size, "blank_image_size")
        _positive_int(num_polarities, "num_polarities")
        if missing_image not in ("error", "blank"):
            raise ValueError(f"missing_image: expected 'error' or 'blank', got {missing_image!r}")
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.max_length = max_length
        self.max_spans = max_spans
        self.missing_image = missing_image
        self.blank_image_size = blank_image_size
        self.num_polarities = num_polarities
        self.return_ids = return_ids
        self.use_word_ids = use_word_ids
        #: ``None`` samples dropped; words and samples cut by ``max_length``; spans dropped
        #: (truncated or beyond ``max_spans``)
        self.dropped = 0
        self.truncated_words = 0
        self.truncated_samples = 0
        self.dropped_spans = 0
        self._warned = False

    # -- checks -------------------------------------------------------------------------------------
    def _words(self, sample: Any, position: int) -> list[str]:
        if not isinstance(sample, Mapping) or "words" not in sample:
            raise TypeError(f"collate: sample {position}: expected a dict with 'words', got {str(sample)[:80]!r}")
        words = sample["words"]
        if isinstance(words, str) or not isinstance(words, Sequence) or not words:
            raise ValueError(
                f"collate: sample {sample.get('id', position)!r}: 'words' must be a non-empty list of str, "
                f"got {str(words)[:80]!r}"
            )
        return list(words)

    def _aspects(self, sample: Mapping[str, Any], n_words: int, position: int) -> list[tuple[int, int, int]]:
        out = []
        name = sample.get("id", position)
        for k, aspect in enumerate(sample["aspects"]):
            try:
                start, end, polarity = aspect
            except (TypeError, ValueError):
                raise ValueError(
                    f"collate: sample {name!r}: aspects[{k}] must be (start, end, polarity), got {aspect!r}"
                ) from None
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (start, end, polarity)):
                raise ValueError(f"collate: sample {name!r}: aspects[{k}] must hold ints, got {aspect!r}")
            if not 0 <= start <= end < n_words:
                raise ValueError(
                    f"collate: sample {name!r}: aspects[{k}] span ({start}, {end}) must satisfy "
                    f"0 <= start <= end < {n_words} (the number of words; end is inclusive)"
                )
            if not 0 <= polarity < self.num_polarities:
                raise ValueError(
                    f"collate: sample {name!r}: aspects[{k}] polarity {polarity} is not in [0, {self.num_polarities})"
                )
            out.append((int(start), int(end), int(polarity)))
        return out

    def _all_or_none(self, samples: Sequence[Mapping[str, Any]], key: str) -> bool:
        has = [key in s and s[key] is not None for s in samples]
        if any(has) and not all(has):
            missing = next(s.get("id", i) for i, s in enumerate(samples) if not has[i])
            raise ValueError(f"collate: sample {missing!r} has no {key!r} but others in the batch do")
        return all(has)

    # -- batch --------------------------------------------------------------------------------------
    def __call__(self, samples: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
        kept = [s for s in samples if s is not None]
        self.dropped += len(samples) - len(kept)
        if not kept:
            return None
        words = [self._words(s, i) for i, s in enumerate(kept)]
        alignments = align_words_batch(
            words, self.tokenizer, max_length=self.max_length, use_word_ids=self.use_word_ids
        )
        batch = self._text(alignments)
        if self._all_or_none(kept, "aspects"):
            aspects = [self._aspects(s, len(w), i) for i, (s, w) in enumerate(zip(kept, words))]
            batch.update(self._spans(aspects, alignments))
        if self.image_transform is not None:
            batch.update(self._images(kept))
        if self._all_or_none(kept, "relation_label"):
            labels = [s["relation_label"] for s in kept]
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v in (0, 1) for v in labels):
                raise ValueError(f"collate: 'relation_label' must be 0 or 1, got {labels}")
            batch["relation_labels"] = torch.tensor(labels, dtype=torch.long)
        batch["words"] = words
        if self.return_ids:
            batch["ids"] = [str(s.get("id", "")) for s in kept]
        self._count_truncation(words, alignments)
        return batch

    def _text(self, alignments: Sequence[WordAlignment]) -> dict[str, Tensor]:
        size = len(alignments)
        length = max(a.input_ids.numel() for a in alignments)
        n_words = max(1, max(a.num_kept_words for a in alignments))
        input_ids = torch.full((size, length), int(self.tokenizer.pad_token_id), dtype=torch.long)
        attention_mask = torch.zeros(size, length, dtype=torch.long)
        with_types = all(a.token_type_ids is not None for a in alignments)
        token_type_ids = torch.zeros(size, length, dtype=torch.long)
        word_starts = torch.zeros(size, n_words, dtype=torch.long)
        word_mask = torch.zeros(size, n_words, dtype=torch.bool)
        for i, a in enumerate(alignments):
            n = a.input_ids.numel()
            input_ids[i, :n] = a.input_ids
            attention_mask[i, :n] = a.attention_mask
            if with_types:
                token_type_ids[i, :n] = a.token_type_ids
            word_starts[i, : a.num_kept_words] = a.word_starts[: a.num_kept_words]
            word_mask[i, : a.num_kept_words] = True
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        if with_types:
            out["token_type_ids"] = token_type_ids
        out.update(word_starts=word_starts, word_mask=word_mask)
        return out

    def _spans(
        self, aspects: Sequence[list[tuple[int, int, int]]], alignments: Sequence[WordAlignment]
    ) -> dict[str, Tensor]:
        size = len(aspects)
        n_words = max(1, max(a.num_kept_words for a in alignments))
        kept = [[t for t in spans if t[1] < a.num_kept_words] for spans, a in zip(aspects, alignments)]
        n_spans = self.max_spans if self.max_spans is not None else max(1, max(map(len, kept)))
        self.dropped_spans += sum(len(all_) - min(len(k), n_spans) for all_, k in zip(aspects, kept))
        start_labels = torch.zeros(size, n_words)
        end_labels = torch.zeros(size, n_words)
        spans = torch.zeros(size, n_spans, 2, dtype=torch.long)
        span_mask = torch.zeros(size, n_spans, dtype=torch.bool)
        span_polarity = torch.full((size, n_spans), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(kept):
            row = row[:n_spans]
            for j, (start, end, polarity) in enumerate(row):
                start_labels[i, start] = 1.0
                end_labels[i, end] = 1.0
                spans[i, j, 0], spans[i, j, 1] = start, end
                span_polarity[i, j] = polarity
            span_mask[i, : len(row)] = True
        return {
            "start_labels": start_labels,
            "end_labels": end_labels,
            "spans": spans,
            "span_mask": span_mask,
            "span_polarity": span_polarity,
        }

    def _images(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        assert self.image_transform is not None
        pixels, real = [], []
        for i, sample in enumerate(samples):
            image = sample.get("image")
            if image is None:
                if self.missing_image == "error":
                    raise ValueError(
                        f"collate: sample {sample.get('id', i)!r} has no image, but image_transform is set (the "
                        "model reads pixel_values). Give the data set an image_dir, leave image_transform out "
                        "for a text-only model, or pass missing_image='blank' to use a black placeholder "
                        "(the batch then carries image_mask)"
                    )
                image = Image.new("RGB", (self.blank_image_size, self.blank_image_size))
            pixel = self.image_transform(image)
            if not isinstance(pixel, Tensor) or pixel.dim() != 3:
                raise ValueError(
                    f"image_transform must return a Tensor [3, H, W], got "
                    f"{tuple(pixel.shape) if isinstance(pixel, Tensor) else type(pixel).__name__}"
                )
            pixels.append(pixel)
            real.append(sample.get("image") is not None)
        if len({tuple(p.shape) for p in pixels}) != 1:
            raise ValueError(
                f"image_transform returned different shapes {sorted({tuple(p.shape) for p in pixels})}; "
                "it must resize to one size"
            )
        out = {"pixel_values": torch.stack(pixels)}
        if not all(real):
            out["image_mask"] = torch.tensor(real, dtype=torch.bool)
        return out

    def _count_truncation(self, words: Sequence[list[str]], alignments: Sequence[WordAlignment]) -> None:
        cut = [len(w) - a.num_kept_words for w, a in zip(words, alignments)]
        self.truncated_words += sum(cut)
        self.truncated_samples += sum(1 for c in cut if c)
        if (self.truncated_words or self.dropped_spans) and not self._warned:
            self._warned = True
            warnings.warn(
                f"JMASACollator: {self.truncated_words} word(s) of {self.truncated_samples} sample(s) cut "
                f"by max_length={self.max_length}, {self.dropped_spans} aspect span(s) dropped (cut words or "
                f"more than max_spans={self.max_spans}); warned once, totals in collator.truncated_words / "
                ".truncated_samples / .dropped_spans",
                stacklevel=2,
            )
