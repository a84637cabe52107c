"""JML presets: ``jml-base`` (paper sizes), ``jml-tiny`` (CPU tests), their variants and the relation module.

Preset names follow ``<architecture>-<size>[-<variant>]``: ``jml-tiny-text`` is the text-only
variant of ``jml-tiny``, ``jml-relation-tiny`` the tiny relation module.
"""

from __future__ import annotations

import copy
from typing import Any

from mmfuse.core.config import deep_merge
from mmfuse.models.text_configs import BERT_BASE, BERT_MICRO

RESNET50_REGIONS: dict[str, Any] = {"name": "timm-regions", "model_name": "resnet50", "img_size": 224, "grid_size": 7}
TINY_REGIONS: dict[str, Any] = {
    "name": "timm-regions", "model_name": "resnet18", "img_size": 64, "grid_size": 4, "layers": [1, 1, 1, 1],
    "channels": [16, 32, 64, 128], "stem_width": 16, "output_stride": 16, "crop_pct": 1.0,
}
_TEXT_BASE = {"name": "hf-text", "config": BERT_BASE, "max_length": 128}
_TEXT_TINY = {"name": "hf-text", "config": BERT_MICRO, "max_length": 64}

RELATION_BASE: dict[str, Any] = {
    "description": "JML relation module (TRC 'image adds'): BERT-base + ResNet-50 7×7 regions, d_model 768",
    "model": "jml-relation", "text_encoder": _TEXT_BASE, "image_encoder": RESNET50_REGIONS,
    "d_model": 768, "n_heads": 8, "dropout": 0.1,
}
RELATION_TINY: dict[str, Any] = {
    "description": "JML relation module, tiny (CPU tests): 1-layer 32-wide BERT, 64×64 ResNet with 4×4 regions",
    "model": "jml-relation", "text_encoder": _TEXT_TINY, "image_encoder": TINY_REGIONS,
    "d_model": 32, "n_heads": 2, "ffn_dim": 64, "dropout": 0.0,
}


def _relation_options(preset: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in preset.items() if k not in ("description", "model")}


JML_BASE: dict[str, Any] = {
    "description": "JML (soft relation gate): BERT-base text, ResNet-50 7×7 regions, relation module with its "
                   "own encoders; random init unless local weights are given",
    "model": "jml", "text_encoder": _TEXT_BASE, "image_encoder": RESNET50_REGIONS,
    "relation": _relation_options(RELATION_BASE), "gate": "soft", "d_model": 768, "n_heads": 8, "dropout": 0.1,
}
JML_TINY: dict[str, Any] = {
    "description": "JML, tiny (CPU tests): 1-layer 32-wide BERT, 64×64 ResNet, 4×4 regions, soft gate",
    "model": "jml", "text_encoder": _TEXT_TINY, "image_encoder": TINY_REGIONS,
    "relation": _relation_options(RELATION_TINY), "gate": "soft", "d_model": 32, "n_heads": 2, "dropout": 0.0,
}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hard": ("with the hard relation gate (G = 1 if p_r ≥ 0.5 else 0, straight-through gradient)", {"gate": "hard"}),
    "text": ("text-only joint baseline (no image branch, no relation module)",
             {"image_encoder": None, "relation": None, "gate": "none"}),
    "norel": ("without relation detection (ungated regions)", {"relation": None, "gate": "none"}),
}


def jml_presets() -> dict[str, dict[str, Any]]:
    """``jml-base``, ``jml-tiny``, their variants ``-hard``, ``-text``, ``-norel`` and
    ``jml-relation-base`` / ``jml-relation-tiny`` (names follow ``<architecture>-<size>[-<variant>]``)."""
    presets: dict[str, dict[str, Any]] = {
        "jml-relation-base": copy.deepcopy(RELATION_BASE),
        "jml-relation-tiny": copy.deepcopy(RELATION_TINY),
    }
    for name, base in (("jml-base", JML_BASE), ("jml-tiny", JML_TINY)):
        presets[name] = copy.deepcopy(base)
        for suffix, (what, overrides) in VARIANTS.items():
            variant = deep_merge(base, overrides)  # a None override replaces (drops) the entry's config
            variant["description"] = f"{name} {what}"
            presets[f"{name}-{suffix}"] = variant
    return presets


__all__ = ["JML_BASE", "JML_TINY", "RELATION_BASE", "RELATION_TINY", "VARIANTS", "jml_presets"]
