"""RADM: residual attention-based cross-modal deep interaction model (architecture ``radm``).

Pipeline (each part a module given to the constructor; the registered ``radm`` model factory,
:func:`mmfuse.models.radm.builder.build_radm`, builds them from a config)::

    input_ids ─► text_encoder (hf-text: BERT) ─► Linear → d_model ─┐
                                                                   ├─► fusion (radm-interaction: N layers of
    pixel_values ─► image_encoder (timm-vit) ─► Linear → d_model ──┘     self/cross residual attention + FFN)
        ─► self_fusion (self-fusion: joint layers over [text; image]) ─► pool each modality ─► concat [B, 2d]
        ─► heads (classifier: one classifier per task) ─► Σ_task weight · cross-entropy

The model implements the :class:`~mmfuse.core.features.SupportsFusion` protocol
(``encode_text``, ``encode_image``, ``fuse``) and declares its ``feature_dims``, so the ITC / ITM
auxiliary losses attach to it (``aux_losses`` in the config),
and ``forward(batch, return_attentions=True)`` returns the score maps of every attention.
Presets (``radm-base``, ``radm-tiny`` and the ablations) are in :mod:`mmfuse.models.radm.presets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.core.batch import check_batch_sizes
from mmfuse.core.config import ConfigError
from mmfuse.core.features import FeatureDims, Features
from mmfuse.core.outputs import ClassificationOutput
from mmfuse.fusion.pooling import Pooling, pool
from mmfuse.fusion.protocol import check_fusion_output
from mmfuse.fusion.residual_attention import set_attention_impl
from mmfuse.ops.attention import Impl
from mmfuse.models.encoding import ProjectedEncoders, ProjectedEncodersMixin, require_module
from mmfuse.models.pretrained import PretrainedMixin

NAME = "radm"
#: what RADM reads of its image encoder besides ProjectedEncoders' needs (attention maps, "cls" pooling)
IMAGE_ENCODER_ATTRIBUTES = ("grid_size", "num_prefix_tokens")
HEAD_ATTRIBUTES = ("tasks", "losses", "check_labels")


class RADM(ProjectedEncodersMixin, PretrainedMixin, nn.Module):
    """The RADM multimodal classifier, composed of the modules it is given.

    Args:
        text_encoder: text encoder module (e.g. ``hf-text``), any ``out_dim`` wide
            (:class:`~mmfuse.encoders.protocol.TextEncoder`).
        image_encoder: image encoder module (e.g. ``timm-vit``), any ``out_dim`` wide
            (:class:`~mmfuse.encoders.protocol.ImageEncoder`).
        fusion: fusion block over ``d_model``-wide text and image tokens (protocol of
            :mod:`mmfuse.fusion.protocol`), e.g. ``radm-interaction``.
        self_fusion: fusion block applied after ``fusion`` (e.g. ``self-fusion``); None skips it.
        heads: classification heads taking ``d_in = 2 · d_model`` (the concatenated pooled text and
            image vectors), with ``tasks``, ``losses`` and ``check_labels`` (e.g. ``classifier``).
        d_model: common width the encoders' tokens are projected to (the width ``fusion`` works in).
        pooling: ``"mean"`` (masked mean of the real tokens) or ``"cls"`` (first token; the image
            encoder must then include its class token).
        task_weights: task → loss weight (default 1 for every task).
        dropout: dropout on the projected encoder tokens.

    ``mmfuse.build_model("radm-tiny")`` builds the parts from a config and calls this
    constructor; docs/architecture.md shows a RADM composed by hand.
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        image_encoder: nn.Module,
        fusion: nn.Module,
        self_fusion: nn.Module | None,
        heads: nn.Module,
        d_model: int = 768,
        pooling: Pooling = "mean",
        task_weights: dict[str, float] | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.encoders = ProjectedEncoders(text_encoder, image_encoder, d_model, dropout, model=NAME,
                                          pooling=pooling, image_attributes=IMAGE_ENCODER_ATTRIBUTES)
        if pooling == "cls" and image_encoder.num_prefix_tokens < 1:
            raise ConfigError("pooling: 'cls' needs the image encoder's class token first in its tokens "
                              "(set image_encoder.include_class_token: true) or use 'mean'")
        self.d_model = d_model
        self.pooling: Pooling = pooling
        self.fusion = require_module(fusion, (), "fusion", NAME)
        self.self_fusion = require_module(self_fusion, (), "self_fusion", NAME) if self_fusion is not None else None
        self.heads = require_module(heads, HEAD_ATTRIBUTES, "heads", NAME)
        weights = dict(task_weights or {})
        unknown = sorted(set(weights) - set(self.heads.tasks))
        if unknown:
            raise ConfigError(f"task_weights: unknown tasks {unknown}; the heads' tasks are {sorted(self.heads.tasks)}")
        self.task_weights: dict[str, float] = {task: float(weights.get(task, 1.0)) for task in self.heads.tasks}
        #: widths of encode_text / encode_image pooled vectors and of fuse (sizes ITC / ITM heads)
        self.feature_dims = FeatureDims(text=d_model, image=d_model, fused=2 * d_model)

    # -- SupportsFusion --------------------------------------------------------------------
    def encode_text(self, batch: Mapping[str, Any]) -> Features:
        """Projected text tokens ``[B, Lt, d_model]``, mask ``[B, Lt]`` and pooled ``[B, d_model]``."""
        return self.encoders.encode_text(*self.encoders.text_inputs(batch))

    def encode_image(self, batch: Mapping[str, Any]) -> Features:
        """Projected image tokens ``[B, Li, d_model]``, mask ``[B, Li]`` (all False for the
        placeholder images of ``image_mask``) and pooled ``[B, d_model]``."""
        return self.encoders.encode_image(*self.encoders.image_inputs(batch))

    def fuse(self, text: Features, image: Features) -> Tensor:
        """Fused representation ``[B, 2 · d_model]`` of row-aligned text and image features."""
        return self._fuse(text, image, return_attentions=False)[0]

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
        """Classify a batch (see :mod:`mmfuse.core.batch` for the keys); with ``labels`` the
        output has ``loss`` = Σ task_weight · cross-entropy and the per-task ``losses``."""
        ids, mask, types = self.encoders.text_inputs(batch)
        pixels, image_mask = self.encoders.image_inputs(batch)
        labels = batch.get("labels")
        sizes = {"input_ids": ids.shape[0], "pixel_values": pixels.shape[0]}
        if isinstance(labels, Mapping):
            sizes.update({f"labels[{t!r}]": y.shape[0] for t, y in labels.items() if isinstance(y, Tensor) and y.dim()})
        batch_size = check_batch_sizes(sizes)
        text = self.encoders.encode_text(ids, mask, types)
        image = self.encoders.encode_image(pixels, image_mask)
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
