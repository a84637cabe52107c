"""``jml-relation``: JML's text–image relation detector as a model of its own (paper section 3.1).

It is trained alone on TRC's binary ``image_adds`` label (``mmfuse train`` with the ``trc``
data set and, since TRC ships no images, a user image folder) and then loaded into JML as its
relation gate (``relation_checkpoint`` of the ``jml`` model)::

    input_ids ─► text_encoder (hf-text) ─► Linear → d_model ─┐
                                                             ├─► RelationHead (eqs 1–5) ─► logits [B, 2]
    pixel_values ─► image_encoder (timm-regions) ─► Linear ──┘

``forward(batch)`` returns a :class:`~mmfuse.core.outputs.ClassificationOutput` with
``logits[task]`` ``[B, 2]`` (index 1 = "image adds") and, when ``batch["labels"][task]`` is given,
the cross-entropy of eq 6 as ``loss`` / ``losses[task]``. ``task`` defaults to ``"image_adds"``,
the name of this label in the TRC reader (:mod:`mmfuse.data.datasets.trc`), so the generic classification
training path works unchanged. The model implements :class:`~mmfuse.core.features.SupportsFusion`
(the fused vector is the head's ``H``, ``[B, 4 · d_model]``).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from mmfuse.core.batch import check_batch_sizes
from mmfuse.core.config import ConfigError
from mmfuse.core.features import FeatureDims, Features
from mmfuse.core.outputs import ClassificationOutput
from mmfuse.heads.classification import check_class_labels
from mmfuse.heads.relation import relation_loss, relation_probability
from mmfuse.models.encoding import ProjectedEncoders, ProjectedEncodersMixin, require_module
from mmfuse.models.pretrained import PretrainedMixin

NAME = "jml-relation"


class JMLRelation(ProjectedEncodersMixin, PretrainedMixin, nn.Module):
    """Binary "image adds to the tweet meaning" classifier (TRC), JML's relation module.

    Args:
        text_encoder: text encoder module (``hf-text``).
        image_encoder: region encoder module (``timm-regions``).
        head: the relation head (:class:`~mmfuse.heads.relation.RelationHead`, eqs 1–5) over
            ``d_model``-wide tokens and regions, returning ``(logits [B, 2], H [B, 4 · d_model])``.
        d_model: common width of text tokens and regions.
        dropout: dropout on the projected tokens.
        task: the label key (``batch["labels"][task]``) and logits key of the output.

    The registered ``jml-relation`` model factory (:func:`mmfuse.models.jml.builder.build_jml_relation`)
    builds these parts from a config.
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        image_encoder: nn.Module,
        head: nn.Module,
        d_model: int = 768,
        dropout: float = 0.1,
        task: str = "image_adds",
    ) -> None:
        super().__init__()
        if not isinstance(task, str) or not task or "." in task:
            raise ConfigError(f"task: expected a non-empty name without dots, got {task!r}")
        if image_encoder is None:
            raise ConfigError("image_encoder: the relation module needs images (a region encoder such as timm-regions)")
        self.encoders = ProjectedEncoders(text_encoder, image_encoder, d_model, dropout, model=NAME)
        self.head = require_module(head, (), "head", NAME)
        self.d_model = d_model
        self.task = task
        self.tasks: dict[str, int] = {task: 2}
        self.feature_dims = FeatureDims(text=d_model, image=d_model, fused=4 * d_model)

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
            targets = check_class_labels(labels, self.tasks, logits.shape[0])
            output.losses = {self.task: relation_loss(logits, targets[self.task])}
            output.loss = output.losses[self.task]
        return output
