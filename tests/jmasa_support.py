"""Test helpers for the joint aspect-sentiment data code: tokenizers that need no download."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers

from mmfuse.encoders.tokenizer import build_vocabulary


def slow_wordpiece_tokenizer(folder: Path):
    """A slow (pure-Python) BERT tokenizer over the offline vocabulary of
    :func:`mmfuse.encoders.tokenizer.build_wordpiece_tokenizer`: it has no ``word_ids``."""
    legacy = getattr(transformers, "BertTokenizerLegacy", None)
    if legacy is None:
        pytest.skip("this transformers version has no BertTokenizerLegacy")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(build_vocabulary()) + "\n", encoding="utf-8")
    tokenizer = legacy(str(vocab), do_lower_case=True)
    assert not tokenizer.is_fast
    return tokenizer
