"""``jml-relation``: JML's text–image relation detector as a model of its own (paper section 3.1).

It is trained alone on TRC's binary ``image_adds`` label (``mmfuse train`` with the ``trc``
data set and, since TRC ships no images, a user image folder) and then loaded into JML as its
relation gate (``relation_checkpoint`` of the ``jml`` model)::

    input_ids ─► text_encoder (hf-text) ─► Linear → d_model ─┐
                                                             ├─► RelationHead (eqs 1–5) ─► logits [B, 2]
    pixel_values ─► image_encoder (timm-regions) ─► Linear ──┘

``forward(batch)`` returns a :class:`~mmfuse.models.outputs.ClassificationOutput` with
``logits[task]`` ``[B, 2]`` (index 1 = "image adds") and, when ``batch["labels"][task]`` is given,
the cross-entropy of eq 6 as ``loss`` / ``losses[task]``. ``task`` defaults to ``"image_adds"``,
the name of this label in the TRC reader (:mod:`mmfuse.data.trc`), so the generic classification
training path works unchanged. The model implements :class:`~mmfuse.models.protocol.SupportsFusion`
(the fused vector is the head's ``H``, ``[B, 4 · d_model]``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from mmfuse.builder import ComponentSpec
from mmfuse.config import ConfigError
from mmfuse.fusion.residual_attention import Impl
from mmfuse.heads.relation import RelationHead, relation_loss, relation_probability
from mmfuse.models.batch import BatchError, check_batch_sizes, checking_values
from mmfuse.models.jml_encoding import ProjectedEncoders
from mmfuse.models.outputs import ClassificationOutput
from mmfuse.models.pretrained import PretrainedMixin
from mmfuse.models.protocol import FeatureDims, Features

NAME = "jml-relation"


class JMLRelation(PretrainedMixin, nn.Module):
    """Binary "image adds to the tweet meaning" classifier (TRC), JML's relation module.

    Args:
        text_encoder: text encoder spec (``hf-text``).
        image_encoder: region encoder spec (``timm-regions``).
        d_model: common width of text tokens and regions.
        n_heads: attention heads of the relation head.
        ffn_dim: feed-forward width of its self-attention layers (default ``4 · d_model``).
        dropout: dropout on the projected tokens and inside the head.
        task: the label key (``batch["labels"][task]``) and logits key of the output.
        impl: attention implementation.
    """

    def __init__(
        self,
        text_encoder: ComponentSpec,
        image_encoder: ComponentSpec,
        d_model: int = 768,
        n_heads: int = 8,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        task: str = "image_adds",
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        if not task or "." in task:
            raise ConfigError(f"task: expected a non-empty name without dots, got {task!r}")
        self.encoders = ProjectedEncoders(text_encoder, image_encoder, d_model, dropout, model=NAME)
        self.head = RelationHead(d_model, n_heads=n_heads, ffn_dim=ffn_dim, dropout=dropout, impl=impl)
        self.d_model = d_model
        self.task = task
        self.tasks: dict[str, int] = {task: 2}
        self.feature_dims = FeatureDims(text=d_model, image=d_model, fused=4 * d_model)

    # -- inputs ------------------------------------------------------------------------------
    def get_processor(self, train: bool = False):
        """The processor making this model's batches (tokenizer + timm region transform)."""
        return self.encoders.get_processor(train)

    @property
    def text_encoder(self) -> nn.Module:
        return self.encoders.text_encoder

    @property
    def image_encoder(self) -> nn.Module:
        return self.encoders.image_encoder

    # -- SupportsFusion ----------------------------------------------------------------------
    def encode_text(self, batch: Mapping[str, Any]) -> Features:
        """Projected text tokens ``[B, L, d_model]``, mask and masked-mean pooled ``[B, d_model]``."""
        return self.encoders.encode_text(*self.encoders.text_inputs(batch))

    def encode_image(self, batch: Mapping[str, Any]) -> Features:
        """Projected regions ``[B, R, d_model]``, mask (False for placeholder images) and pooled."""
        return self.encoders.encode_image(*self.encoders.image_inputs(batch))

    def fuse(self, text: Features, image: Features) -> Tensor:
        """The relation head's concatenated state ``H`` ``[B, 4 · d_model]`` for row-aligned pairs."""
        return self.head(text.tokens, text.mask, image.tokens, image.mask)[1]

    # -- forward -----------------------------------------------------------------------------
    def relation_logits(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Features, Features]:
        """``(logits [B, 2], H [B, 4d], text features, image features)`` of a checked batch."""
        ids, mask, types = self.encoders.text_inputs(batch)
        pixels, image_mask = self.encoders.image_inputs(batch)
        check_batch_sizes({"input_ids": ids.shape[0], "pixel_values": pixels.shape[0]})
        text = self.encoders.encode_text(ids, mask, types)
        image = self.encoders.encode_image(pixels, image_mask)
        logits, fused = self.head(text.tokens, text.mask, image.tokens, image.mask)
        return logits, fused, text, image

    def probability(self, batch: Mapping[str, Any]) -> Tensor:
        """``p_r`` ``[B]``: probability that each image adds to its text's meaning (eq 5)."""
        return relation_probability(self.relation_logits(batch)[0])

    def forward(self, batch: Mapping[str, Any]) -> ClassificationOutput:
        logits, fused, text, image = self.relation_logits(batch)
        output = ClassificationOutput(logits={self.task: logits}, text_pooled=text.pooled, image_pooled=image.pooled,
                                      fused=fused, text_features=text, image_features=image)
        labels = batch.get("labels")
        if labels is not None:
            targets = _checked_labels(labels, self.tasks, logits.shape[0])
            output.losses = {self.task: relation_loss(logits, targets[self.task])}
            output.loss = output.losses[self.task]
        return output


def _checked_labels(labels: Any, tasks: dict[str, int], batch_size: int) -> dict[str, Tensor]:
    """``labels`` validated like a classification head's (task → ``[B]`` class indices or -100)."""
    if not isinstance(labels, Mapping):
        raise TypeError(f"labels: expected a dict task -> LongTensor [B], got {type(labels).__name__}")
    out = {}
    for task, n_classes in tasks.items():
        if task not in labels:
            raise BatchError(f"labels: missing {task!r} (this {NAME} model's task); got {sorted(labels)}")
        y = labels[task]
        if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"labels[{task!r}]: expected a LongTensor [B] of class indices, got "
                            f"{y.dtype if isinstance(y, Tensor) else type(y).__name__}")
        if tuple(y.shape) != (batch_size,):
            raise BatchError(f"labels[{task!r}]: expected shape [{batch_size}], got {tuple(y.shape)}")
        bad = (y != -100) & ((y < 0) | (y >= n_classes))
        if checking_values() and bool(bad.any()):
            raise BatchError(f"labels[{task!r}]: class indices must be in [0, {n_classes - 1}] (or -100), "
                             f"got {int(y[bad][0])}")
        out[task] = y.long()
    return out
