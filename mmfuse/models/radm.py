"""RADM: residual attention-based cross-modal deep interaction model (architecture ``radm``).

Pipeline (each part a registered component, replaceable by config)::

    input_ids ─► text_encoder (hf-text: BERT) ─► Linear → d_model ─┐
                                                                   ├─► fusion (radm-interaction: N layers of
    pixel_values ─► image_encoder (timm-vit) ─► Linear → d_model ──┘     self/cross residual attention + FFN)
        ─► self_fusion (self-fusion: joint layers over [text; image]) ─► pool each modality ─► concat [B, 2d]
        ─► heads (classification: one classifier per task) ─► Σ_task weight · cross-entropy

The model implements the :class:`~mmfuse.models.protocol.SupportsFusion` protocol
(``encode_text``, ``encode_image``, ``fuse``) and declares its ``feature_dims``, so the ITC / ITM
auxiliary losses attach to it (``aux_losses`` in the config),
and ``forward(batch, return_attentions=True)`` returns the score maps of every attention.
Presets (``radm``, ``radm-tiny`` and the ablations) are at the end of this module.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from mmfuse.builder import ComponentSpec, build_component
from mmfuse.config import ConfigError, deep_merge
from mmfuse.fusion.pooling import Pooling, pool
from mmfuse.fusion.protocol import check_fusion_output
from mmfuse.fusion.residual_attention import Impl, set_attention_impl
from mmfuse.models.batch import (
    check_batch_sizes,
    check_image_mask,
    check_mapping,
    check_pixel_values,
    check_text_inputs,
)
from mmfuse.models.outputs import ClassificationOutput
from mmfuse.models.pretrained import PretrainedMixin
from mmfuse.models.protocol import FeatureDims, Features

TEXT_ENCODER_ATTRIBUTES = ("out_dim", "max_length", "vocab_size", "tokenizer")
IMAGE_ENCODER_ATTRIBUTES = ("out_dim", "image_size", "grid_size", "num_prefix_tokens", "data_config")
HEAD_ATTRIBUTES = ("tasks", "losses", "check_labels")


def _require(component: object, attributes: tuple[str, ...], where: str) -> None:
    missing = [a for a in attributes if not hasattr(component, a)]
    if missing:
        raise ConfigError(f"{where}: {type(component).__name__} lacks {', '.join(missing)} "
                          f"(required of a {where.replace('_', ' ')} by the radm model)")


class RADM(PretrainedMixin, nn.Module):
    """The RADM multimodal classifier.

    Args:
        text_encoder: text encoder spec, e.g. ``{"name": "hf-text", "config": {...}}``.
        image_encoder: image encoder spec, e.g. ``{"name": "timm-vit", "model_name": "vit_base_patch16_224"}``.
        heads: head spec, e.g. ``{"name": "classification", "tasks": {"sentiment": 3}}``; it
            receives ``d_in = 2 · d_model`` (the concatenated pooled text and image vectors).
        d_model: common width the encoders' tokens are projected to.
        fusion: fusion-block spec (``d_model`` injected), by default the interaction network.
        self_fusion: fusion-block spec applied after ``fusion``; None skips it.
        pooling: ``"mean"`` (masked mean of the real tokens) or ``"cls"`` (first token; the image
            encoder must then include its class token).
        task_weights: task → loss weight (default 1 for every task).
        dropout: dropout on the projected encoder tokens.
    """

    def __init__(
        self,
        text_encoder: ComponentSpec,
        image_encoder: ComponentSpec,
        heads: ComponentSpec,
        d_model: int = 768,
        fusion: ComponentSpec = "radm-interaction",
        self_fusion: ComponentSpec | None = "self-fusion",
        pooling: Literal["mean", "cls"] = "mean",
        task_weights: dict[str, float] | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if d_model < 1:
            raise ConfigError(f"d_model: expected a positive int, got {d_model}")
        self.d_model = d_model
        self.pooling: Pooling = pooling
        self.text_encoder = build_component("encoder", text_encoder, where="text_encoder")
        _require(self.text_encoder, TEXT_ENCODER_ATTRIBUTES, "text_encoder")
        self.image_encoder = build_component("encoder", image_encoder, where="image_encoder")
        _require(self.image_encoder, IMAGE_ENCODER_ATTRIBUTES, "image_encoder")
        if pooling == "cls" and self.image_encoder.num_prefix_tokens < 1:
            raise ConfigError("pooling: 'cls' needs the image encoder's class token first in its tokens "
                              "(set image_encoder.include_class_token: true) or use 'mean'")
        self.text_proj = nn.Sequential(nn.Linear(self.text_encoder.out_dim, d_model), nn.Dropout(dropout))
        self.image_proj = nn.Sequential(nn.Linear(self.image_encoder.out_dim, d_model), nn.Dropout(dropout))
        self.fusion = build_component("fusion", fusion, where="fusion", d_model=d_model)
        self.self_fusion = (
            build_component("fusion", self_fusion, where="self_fusion", d_model=d_model)
            if self_fusion is not None else None
        )
        self.heads = build_component("head", heads, where="heads", d_in=2 * d_model)
        _require(self.heads, HEAD_ATTRIBUTES, "heads")
        weights = dict(task_weights or {})
        unknown = sorted(set(weights) - set(self.heads.tasks))
        if unknown:
            raise ConfigError(f"task_weights: unknown tasks {unknown}; the heads' tasks are {sorted(self.heads.tasks)}")
        self.task_weights: dict[str, float] = {task: float(weights.get(task, 1.0)) for task in self.heads.tasks}
        #: widths of encode_text / encode_image pooled vectors and of fuse (sizes ITC / ITM heads)
        self.feature_dims = FeatureDims(text=d_model, image=d_model, fused=2 * d_model)

    # -- inputs --------------------------------------------------------------------------
    def get_processor(self, train: bool = False):
        """The :class:`~mmfuse.data.processing.MultimodalProcessor` making this model's batches
        (``train=True``: with the image encoder's augmentation)."""
        from mmfuse.data.processing import MultimodalProcessor, build_image_transform

        transform = build_image_transform(self.image_encoder.data_config, train=train,
                                          train_options=getattr(self.image_encoder, "train_transform", None))
        return MultimodalProcessor(self.text_encoder.tokenizer, transform, self.text_encoder.max_length)

    def _text_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        return check_text_inputs(check_mapping(batch), self.text_encoder.vocab_size, self.text_encoder.max_length)

    def _image_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor | None]:
        pixels = check_pixel_values(check_mapping(batch), self.image_encoder.image_size)
        return pixels, check_image_mask(batch, pixels.shape[0])

    # -- SupportsFusion --------------------------------------------------------------------
    def encode_text(self, batch: Mapping[str, Any]) -> Features:
        """Projected text tokens ``[B, Lt, d_model]``, mask ``[B, Lt]`` and pooled ``[B, d_model]``."""
        return self._encode_text(*self._text_inputs(batch))

    def encode_image(self, batch: Mapping[str, Any]) -> Features:
        """Projected image tokens ``[B, Li, d_model]``, mask ``[B, Li]`` (all False for the
        placeholder images of ``image_mask``) and pooled ``[B, d_model]``."""
        return self._encode_image(*self._image_inputs(batch))

    def fuse(self, text: Features, image: Features) -> Tensor:
        """Fused representation ``[B, 2 · d_model]`` of row-aligned text and image features."""
        return self._fuse(text, image, return_attentions=False)[0]

    def _encode_text(self, ids: Tensor, mask: Tensor, types: Tensor | None) -> Features:
        features = self.text_encoder(ids, mask, types)
        tokens = self.text_proj(features.tokens)
        return Features(tokens, features.mask, pool(tokens, features.mask, self.pooling))

    def _encode_image(self, pixels: Tensor, image_mask: Tensor | None) -> Features:
        features = self.image_encoder(pixels)
        tokens = self.image_proj(features.tokens)
        mask = features.mask if image_mask is None else features.mask & image_mask[:, None]
        return Features(tokens, mask, pool(tokens, mask, self.pooling))

    def _fuse(self, text: Features, image: Features, return_attentions: bool
              ) -> tuple[Tensor, Tensor, Tensor, dict[str, list[Tensor]] | None]:
        blocks = [("fusion", self.fusion)] + ([("self_fusion", self.self_fusion)] if self.self_fusion is not None else [])
        text_tokens, image_tokens = text.tokens, image.tokens
        attentions: dict[str, list[Tensor]] = {}
        for where, block in blocks:
            out = check_fusion_output(
                block(text_tokens, text.mask, image_tokens, image.mask, return_attentions=return_attentions),
                text_tokens, image_tokens, where,
            )
            text_tokens, image_tokens = out.text, out.image
            for stream, maps in (out.attentions or {}).items():
                if stream in attentions:
                    raise ValueError(f"{where}: attention stream {stream!r} is also produced by an earlier block")
                attentions[stream] = maps
        text_pooled = pool(text_tokens, text.mask, self.pooling)
        image_pooled = pool(image_tokens, image.mask, self.pooling)
        fused = torch.cat([text_pooled, image_pooled], dim=-1)  # [B, 2 · d_model]
        return fused, text_pooled, image_pooled, (attentions if return_attentions else None)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any], return_attentions: bool = False) -> ClassificationOutput:
        """Classify a batch (see :mod:`mmfuse.models.batch` for the keys); with ``labels`` the
        output has ``loss`` = Σ task_weight · cross-entropy and the per-task ``losses``."""
        ids, mask, types = self._text_inputs(batch)
        pixels, image_mask = self._image_inputs(batch)
        labels = batch.get("labels")
        sizes = {"input_ids": ids.shape[0], "pixel_values": pixels.shape[0]}
        if isinstance(labels, Mapping):
            sizes.update({f"labels[{t!r}]": y.shape[0] for t, y in labels.items() if isinstance(y, Tensor) and y.dim()})
        batch_size = check_batch_sizes(sizes)
        text = self._encode_text(ids, mask, types)
        image = self._encode_image(pixels, image_mask)
        fused, text_pooled, image_pooled, attentions = self._fuse(text, image, return_attentions)
        logits = self.heads(fused)
        output = ClassificationOutput(logits=logits, text_pooled=text_pooled, image_pooled=image_pooled, fused=fused,
                                      attentions=attentions, text_features=text, image_features=image)
        if labels is not None:
            targets = self.heads.check_labels(labels, batch_size)
            output.losses = self.heads.losses(logits, targets)
            output.loss = sum(self.task_weights[t] * loss for t, loss in output.losses.items())
        return output

    def set_attention_impl(self, impl: Impl) -> int:
        """Switch every residual attention to ``impl`` (``"auto"``, ``"fused"``, ``"reference"``)."""
        return set_attention_impl(self, impl)


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------
#: BERT-base (uncased) sizes: 12 layers, 768 wide, 12 heads, 30522-token vocabulary
BERT_BASE: dict[str, Any] = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
}
TINY_BERT: dict[str, Any] = {
    "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 128, "max_position_embeddings": 64,
}

RADM_BASE: dict[str, Any] = {
    "description": "RADM: BERT-base text, ViT-B/16 (224×224) patches, 6 gated interaction layers "
                   "(random init unless local weights are given)",
    "model": "radm",
    "d_model": 768,
    "text_encoder": {"name": "hf-text", "config": BERT_BASE, "max_length": 128},
    "image_encoder": {"name": "timm-vit", "model_name": "vit_base_patch16_224"},
    "fusion": {"name": "radm-interaction", "n_layers": 6, "n_heads": 12, "mode": "gated", "dropout": 0.2},
    "self_fusion": {"name": "self-fusion", "n_layers": 2, "n_heads": 12, "mode": "gated", "dropout": 0.2},
    "heads": {"name": "classification", "tasks": {"sentiment": 3}, "hidden_dim": 768, "dropout": 0.2},
    "pooling": "mean",
    "dropout": 0.2,
}

RADM_TINY: dict[str, Any] = {
    "description": "RADM, tiny (CPU tests and demo): 2-layer 64-wide BERT with the offline tokenizer, "
                   "64×64 ViT with 8×8 patches, 2 interaction layers, d_model 64",
    "model": "radm",
    "d_model": 64,
    "text_encoder": {"name": "hf-text", "config": TINY_BERT, "max_length": 32},
    "image_encoder": {
        "name": "timm-vit", "model_name": "vit_tiny_patch16_224", "img_size": 64, "patch_size": 8,
        "embed_dim": 64, "depth": 2, "num_heads": 2, "crop_pct": 1.0,
        # mild augmentation: the synthetic set's labels depend on the shape's colour and form
        "train_transform": {"scale": [0.7, 1.0], "hflip": 0.5, "color_jitter": 0.0},
    },
    "fusion": {"name": "radm-interaction", "n_layers": 2, "n_heads": 4, "mode": "gated", "dropout": 0.1},
    "self_fusion": {"name": "self-fusion", "n_layers": 1, "n_heads": 4, "mode": "gated", "dropout": 0.1},
    "heads": {"name": "classification", "tasks": {"sentiment": 3}, "hidden_dim": 64, "dropout": 0.1},
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
    """``radm``, ``radm-tiny`` and, for each, the ablations ``-rm_rg``, ``-realformer``, ``-rm_c``."""
    presets: dict[str, dict[str, Any]] = {}
    for name, base in (("radm", RADM_BASE), ("radm-tiny", RADM_TINY)):
        presets[name] = copy.deepcopy(base)
        for suffix, (what, overrides) in ABLATIONS.items():
            variant = deep_merge(base, overrides)
            variant["description"] = f"{name} {what}"
            presets[f"{name}-{suffix}"] = variant
    return presets
