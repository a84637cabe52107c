"""RADM presets: ``radm-base`` (paper sizes), ``radm-tiny`` (CPU tests, demo) and their ablations.

Preset names follow ``<architecture>-<size>[-<variant>]``, e.g. ``radm-tiny-rm_rg``.
"""

from __future__ import annotations

import copy
from typing import Any

from mmfuse.core.config import deep_merge
from mmfuse.models.text_configs import BERT_BASE, BERT_TINY

RADM_BASE: dict[str, Any] = {
    "description": "RADM: BERT-base text, ViT-B/16 (224×224) patches, 6 gated interaction layers "
                   "(random init unless local weights are given)",
    "model": "radm",
    "d_model": 768,
    "text_encoder": {"name": "hf-text", "config": BERT_BASE, "max_length": 128},
    "image_encoder": {"name": "timm-vit", "model_name": "vit_base_patch16_224"},
    "fusion": {"name": "radm-interaction", "n_layers": 6, "n_heads": 12, "mode": "gated", "dropout": 0.2},
    "self_fusion": {"name": "self-fusion", "n_layers": 2, "n_heads": 12, "mode": "gated", "dropout": 0.2},
    "heads": {"name": "classifier", "tasks": {"sentiment": 3}, "hidden_dim": 768, "dropout": 0.2},
    "pooling": "mean",
    "dropout": 0.2,
}

RADM_TINY: dict[str, Any] = {
    "description": "RADM, tiny (CPU tests and demo): 2-layer 64-wide BERT with the offline tokenizer, "
                   "64×64 ViT with 8×8 patches, 2 interaction layers, d_model 64",
    "model": "radm",
    "d_model": 64,
    "text_encoder": {"name": "hf-text", "config": BERT_TINY, "max_length": 32},
    "image_encoder": {
        "name": "timm-vit", "model_name": "vit_tiny_patch16_224", "img_size": 64, "patch_size": 8,
        "embed_dim": 64, "depth": 2, "num_heads": 2, "crop_pct": 1.0,
        # mild augmentation: the synthetic set's labels depend on the shape's colour and form
        "train_transform": {"scale": [0.7, 1.0], "hflip": 0.5, "color_jitter": 0.0},
    },
    "fusion": {"name": "radm-interaction", "n_layers": 2, "n_heads": 4, "mode": "gated", "dropout": 0.1},
    "self_fusion": {"name": "self-fusion", "n_layers": 1, "n_heads": 4, "mode": "gated", "dropout": 0.1},
    "heads": {"name": "classifier", "tasks": {"sentiment": 3}, "hidden_dim": 64, "dropout": 0.1},
    "pooling": "mean",
    "dropout": 0.1,
}

#: ablation suffix → (description, overrides)
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "rm_rg": ("without the residual gate: plain attention (mode 'none') everywhere",
              {"fusion": {"mode": "none"}, "self_fusion": {"mode": "none"}}),
    "realformer": ("RealFormer residual attention (mode 'residual': n = s + prev) instead of the gate",
                   {"fusion": {"mode": "residual"}, "self_fusion": {"mode": "residual"}}),
    "rm_c": ("without cross-modal attention in the interaction layers (no text→image / image→text)",
             {"fusion": {"cross_modal": False}}),
}


def radm_presets() -> dict[str, dict[str, Any]]:
    """``radm-base``, ``radm-tiny`` and, for each, the ablations ``-rm_rg``, ``-realformer``, ``-rm_c``
    (names follow ``<architecture>-<size>[-<variant>]``)."""
    presets: dict[str, dict[str, Any]] = {}
    for name, base in (("radm-base", RADM_BASE), ("radm-tiny", RADM_TINY)):
        presets[name] = copy.deepcopy(base)
        for suffix, (what, overrides) in ABLATIONS.items():
            variant = deep_merge(base, overrides)
            variant["description"] = f"{name} {what}"
            presets[f"{name}-{suffix}"] = variant
    return presets
