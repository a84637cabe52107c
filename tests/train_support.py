"""Helpers shared by the trainer and CLI tests: a very small RADM and small synthetic splits."""

from __future__ import annotations

from typing import Any

import torch

from mmfuse import build_model
from mmfuse.data import build_dataset
from mmfuse.train import seed_everything

#: radm-tiny shrunk further (32-px images → 16 patches, one interaction layer): ~0.05 s per step
TINY_OVERRIDES: dict[str, Any] = {
    "d_model": 32,
    "text_encoder.config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                            "intermediate_size": 64},
    "image_encoder": {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2},
    "fusion": {"n_layers": 1, "n_heads": 2},
    "self_fusion": {"n_layers": 1, "n_heads": 2},
    "heads": {"hidden_dim": 32},
}


def tiny_model(seed: int = 0, **overrides: Any) -> torch.nn.Module:
    seed_everything(seed)
    return build_model("radm-tiny", **{**TINY_OVERRIDES, **overrides})


def synthetic(split: str, size: int, **options: Any):
    return build_dataset("synthetic", split, **{f"{split}_size": size, "image_size": 32, **options})
