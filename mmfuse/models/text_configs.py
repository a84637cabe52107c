"""BERT sizes the presets use (``config`` of an ``hf-text`` encoder), each defined once.

The small ones use the offline WordPiece tokenizer (its vocabulary size is filled in by the
encoder), so tiny presets build without network access.
"""

from __future__ import annotations

from typing import Any

#: BERT-base (uncased): 12 layers, 768 wide, 12 heads, 30522-token vocabulary
BERT_BASE: dict[str, Any] = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
}
#: 2 layers, 64 wide (``radm-tiny``: CPU tests and the demo)
BERT_TINY: dict[str, Any] = {
    "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 128, "max_position_embeddings": 64,
}
#: 1 layer, 32 wide (``jml-tiny`` and ``jml-relation-tiny``: CPU tests)
BERT_MICRO: dict[str, Any] = {
    "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 64,
}
