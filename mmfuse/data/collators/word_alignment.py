"""Word ↔ sub-token alignment for pre-split text (aspect spans are word indices, models see sub-tokens).

:func:`align_words` tokenizes a list of words with a Hugging Face tokenizer and says, for every
sub-token, which word it belongs to (``word_index``) and, for every word, where its first
sub-token is (``word_starts``). Span models (JML) read one vector per word at ``word_starts``.

Two paths give the same result for WordPiece (BERT-family) tokenizers:

* **fast tokenizers** (``tokenizer.is_fast``): one call with ``is_split_into_words=True`` and
  ``BatchEncoding.word_ids()``;
* **other tokenizers** (no ``word_ids``): each word is tokenized on its own
  (``tokenizer.tokenize``), the pieces are concatenated and the special tokens added with
  ``prepare_for_model`` (its ``special_tokens_mask`` locates the words' sub-tokens). For byte-level BPE
  tokenizers (GPT-2, RoBERTa) word-by-word tokenization differs from sentence tokenization
  (the leading-space marker); use their fast version.

**Words that tokenize to nothing** — U+200B (zero-width space) and other format characters that
BERT's normaliser deletes, a lone variation selector U+FE0F, a non-breaking space — would have no
sub-token and shift every later span. They are replaced by the tokenizer's ``unk_token`` (one
``[UNK]`` sub-token), so every word keeps a position; :attr:`WordAlignment.unk_words` lists them.

Truncation (``max_length``, special tokens included) keeps whole leading words: a word whose
first sub-token is cut has ``word_starts = -1`` and is not counted in ``num_kept_words`` (a kept
word may lose trailing sub-tokens).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class WordAlignment:
    """Sub-tokens of one pre-split sentence and their words (unpadded, ``L`` sub-tokens, ``W`` words).

    Attributes:
        input_ids: ``[L]`` long, special tokens included.
        attention_mask: ``[L]`` long, all ones (padding is the collator's job).
        token_type_ids: ``[L]`` long, or ``None`` when the tokenizer does not produce them.
        word_index: ``[L]`` long: word number of each sub-token, ``-1`` for special tokens.
        word_starts: ``[W]`` long: index of each word's first sub-token, ``-1`` for words cut
            off by truncation.
        num_kept_words: words that have a sub-token (always a prefix of the words).
        unk_words: indices of the words that tokenized to nothing and were mapped to ``unk_token``.
    """

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor | None
    word_index: Tensor
    word_starts: Tensor
    num_kept_words: int
    unk_words: tuple[int, ...]


def _check_words(words: Sequence[str]) -> list[str]:
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise TypeError(f"words: expected a list of str (a pre-split sentence), got {type(words).__name__}")
    for i, word in enumerate(words):
        if not isinstance(word, str):
            raise TypeError(f"words[{i}]: expected str, got {type(word).__name__}")
    return list(words)


def _unk_token(tokenizer: Any, words: list[str], empty: Sequence[int]) -> str:
    unk = getattr(tokenizer, "unk_token", None)
    if not unk:
        raise ValueError(
            f"words {[words[i] for i in empty][:3]!r} tokenize to nothing and the tokenizer "
            f"{type(tokenizer).__name__} has no unk_token to stand in for them"
        )
    return unk


def _word_starts(word_index: list[int], n_words: int) -> tuple[list[int], int]:
    starts = [-1] * n_words
    for position, word in enumerate(word_index):
        if word >= 0 and starts[word] < 0:
            starts[word] = position
    kept = next((w for w, s in enumerate(starts) if s < 0), n_words)
    if any(s >= 0 for s in starts[kept:]):
        raise ValueError(
            f"word {kept} has no sub-token but later words do: the tokenizer dropped a word in the middle "
            "of the sentence (its unk_token did not stand in for it)"
        )
    return starts, kept


def _encode_fast(tokenizer: Any, words: list[str], max_length: int | None) -> dict[str, Any]:
    enc = tokenizer(
        words,
        is_split_into_words=True,
        add_special_tokens=True,
        truncation=max_length is not None,
        max_length=max_length,
    )
    return {**enc, "word_index": [-1 if w is None else w for w in enc.word_ids()]}


def _align_fast(tokenizer: Any, words: list[str], max_length: int | None) -> tuple[dict[str, Any], list[int]]:
    enc = _encode_fast(tokenizer, words, max_length)
    present = set(enc["word_index"])
    if all(w in present for w in range(len(words))):
        return enc, []
    # Some word has no sub-token: empty after tokenization, or cut by truncation. Tokenize the
    # missing words one by one (pre-split words are tokenized independently of their context).
    missing = [w for w in range(len(words)) if w not in present]
    alone = tokenizer([[words[w]] for w in missing], is_split_into_words=True, add_special_tokens=False)
    empty = [w for w, ids in zip(missing, alone["input_ids"]) if not ids]
    if not empty:
        return enc, []
    unk = _unk_token(tokenizer, words, empty)
    empty_set = set(empty)
    replaced = [unk if i in empty_set else w for i, w in enumerate(words)]
    enc = _encode_fast(tokenizer, replaced, max_length)
    if max_length is None and set(enc["word_index"]) != set(range(len(words))) | {-1}:
        raise ValueError(
            f"unk_token {unk!r} of {type(tokenizer).__name__} does not encode to a sub-token; "
            "cannot give empty words a position"
        )
    return enc, empty


def _align_word_by_word(
    tokenizer: Any, words: list[str], max_length: int | None
) -> tuple[dict[str, Any], list[int]]:
    pieces: list[list[str]] = [tokenizer.tokenize(word) for word in words]
    empty = [i for i, p in enumerate(pieces) if not p]
    if empty:
        unk = _unk_token(tokenizer, words, empty)
        for i in empty:
            pieces[i] = [unk]
    budget = None if max_length is None else max(0, max_length - tokenizer.num_special_tokens_to_add(pair=False))
    ids: list[int] = []
    owners: list[int] = []
    for word, word_pieces in enumerate(pieces):
        for token_id in tokenizer.convert_tokens_to_ids(word_pieces):
            ids.append(token_id)
            owners.append(word)
    if budget is not None:
        ids, owners = ids[:budget], owners[:budget]
    prepare = getattr(tokenizer, "prepare_for_model", None)
    if prepare is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has neither word_ids() (a fast tokenizer) nor prepare_for_model(); "
            "cannot align words with sub-tokens"
        )
    with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    prepared = prepare(
        ids,
        add_special_tokens=True,
        return_special_tokens_mask=True,
        return_token_type_ids=with_types,
        return_attention_mask=True,
    )
    special = prepared["special_tokens_mask"]
    if len(special) - sum(special) != len(ids):
        raise ValueError(f"{type(tokenizer).__name__}: special-token mask does not match the built inputs")
    content = iter(owners)
    enc: dict[str, Any] = {
        "input_ids": prepared["input_ids"],
        "attention_mask": prepared["attention_mask"],
        "word_index": [-1 if is_special else next(content) for is_special in special],
    }
    if with_types:
        enc["token_type_ids"] = prepared["token_type_ids"]
    return enc, empty


def _check_max_length(max_length: int | None) -> None:
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length: expected a positive int or None, got {max_length!r}")


def _use_fast(tokenizer: Any, use_word_ids: bool | None) -> bool:
    fast = bool(getattr(tokenizer, "is_fast", False))
    if use_word_ids and not fast:
        raise ValueError(f"use_word_ids=True needs a fast tokenizer, got {type(tokenizer).__name__}")
    return fast if use_word_ids is None else use_word_ids


def _alignment(enc: dict[str, Any], empty: list[int], n_words: int) -> WordAlignment:
    starts, kept = _word_starts(enc["word_index"], n_words)
    types = enc.get("token_type_ids")
    return WordAlignment(
        input_ids=torch.tensor(enc["input_ids"], dtype=torch.long),
        attention_mask=torch.tensor(enc["attention_mask"], dtype=torch.long),
        token_type_ids=None if types is None else torch.tensor(types, dtype=torch.long),
        word_index=torch.tensor(enc["word_index"], dtype=torch.long),
        word_starts=torch.tensor(starts, dtype=torch.long),
        num_kept_words=kept,
        unk_words=tuple(empty),
    )


def align_words(
    words: Sequence[str], tokenizer: Any, *, max_length: int | None = None, use_word_ids: bool | None = None
) -> WordAlignment:
    """Tokenize pre-split ``words`` and align sub-tokens with words (see the module docstring).

    Args:
        words: the sentence as a list of words (e.g. a tweet's space-separated tokens).
        tokenizer: a Hugging Face tokenizer (fast or not).
        max_length: most sub-tokens, special tokens included (``None``: no truncation).
        use_word_ids: ``True`` / ``False`` forces the fast (``word_ids``) / word-by-word path;
            ``None`` picks the fast path when ``tokenizer.is_fast``.

    Returns:
        A :class:`WordAlignment`.
    """
    return align_words_batch([words], tokenizer, max_length=max_length, use_word_ids=use_word_ids)[0]


def align_words_batch(
    sentences: Sequence[Sequence[str]],
    tokenizer: Any,
    *,
    max_length: int | None = None,
    use_word_ids: bool | None = None,
) -> list[WordAlignment]:
    """:func:`align_words` for several sentences; fast tokenizers encode them in one call."""
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(f"sentences: expected a list of word lists, got {type(sentences).__name__}")
    batch = [_check_words(words) for words in sentences]
    _check_max_length(max_length)
    if not _use_fast(tokenizer, use_word_ids):
        return [_alignment(*_align_word_by_word(tokenizer, words, max_length), len(words)) for words in batch]
    if not batch:
        return []
    encoded = tokenizer(
        batch, is_split_into_words=True, add_special_tokens=True, truncation=max_length is not None,
        max_length=max_length,
    )
    out = []
    for i, words in enumerate(batch):
        owners = [-1 if w is None else w for w in encoded.word_ids(i)]
        if set(owners) >= set(range(len(words))):
            enc = {key: values[i] for key, values in encoded.items()}
            out.append(_alignment({**enc, "word_index": owners}, [], len(words)))
        else:  # a word without sub-token (empty, or truncated): the careful path
            out.append(_alignment(*_align_fast(tokenizer, words, max_length), len(words)))
    return out
