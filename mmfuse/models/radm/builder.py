"""The registered ``radm`` model factory: a config → the parts → :class:`~mmfuse.models.radm.model.RADM`.

Its signature is the ``radm`` config schema (checked by
:func:`mmfuse.core.config.call_with_config`); every part is a registered component spec
(``"name"`` or ``{"name": ..., **options}``), built with
:func:`mmfuse.core.build.build_component` and handed to the RADM constructor.
"""

from __future__ import annotations

from typing import Literal

from mmfuse.core.config import ConfigError
from mmfuse.core.build import ComponentSpec, build_component
from mmfuse.models.radm.model import RADM


def build_radm(
    text_encoder: ComponentSpec,
    image_encoder: ComponentSpec,
    heads: ComponentSpec,
    d_model: int = 768,
    fusion: ComponentSpec = "radm-interaction",
    self_fusion: ComponentSpec | None = "self-fusion",
    pooling: Literal["mean", "cls"] = "mean",
    task_weights: dict[str, float] | None = None,
    dropout: float = 0.2,
) -> RADM:
    """RADM: text + image encoders → residual-attention interaction → self-fusion → heads.

    Args:
        text_encoder: text encoder spec, e.g. ``{"name": "hf-text", "config": {...}}``.
        image_encoder: image encoder spec, e.g. ``{"name": "timm-vit", "model_name": "vit_base_patch16_224"}``.
        heads: head spec, e.g. ``{"name": "classifier", "tasks": {"sentiment": 3}}``; it receives
            ``d_in = 2 · d_model`` (the concatenated pooled text and image vectors).
        d_model: common width the encoders' tokens are projected to (injected into the fusion blocks).
        fusion: fusion-block spec, by default the interaction network.
        self_fusion: fusion-block spec applied after ``fusion``; None skips it.
        pooling, task_weights, dropout: as in :class:`~mmfuse.models.radm.model.RADM`.
    """
    if d_model < 1:
        raise ConfigError(f"d_model: expected a positive int, got {d_model}")
    text = build_component("encoder", text_encoder, where="text_encoder")
    image = build_component("encoder", image_encoder, where="image_encoder")
    fusion_block = build_component("fusion", fusion, where="fusion", d_model=d_model)
    self_fusion_block = (build_component("fusion", self_fusion, where="self_fusion", d_model=d_model)
                         if self_fusion is not None else None)
    head = build_component("head", heads, where="heads", d_in=2 * d_model)
    return RADM(text, image, fusion_block, self_fusion_block, head, d_model=d_model, pooling=pooling,
                task_weights=task_weights, dropout=dropout)
