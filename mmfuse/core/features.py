"""The small protocol through which auxiliary losses (ITC, ITM) talk to any model.

A model supports auxiliary losses when it implements :class:`SupportsFusion`:

* ``encode_text(batch) -> Features``   token states, mask and a pooled vector of the text;
* ``encode_image(batch) -> Features``  the same for the image;
* ``fuse(text, image) -> Tensor``      the fused representation ``[B, d_fused]`` of *any*
  pairing of text and image features (row i of ``text`` with row i of ``image``).

ITC uses the pooled vectors; ITM re-pairs rows (``Features.select``) to build hard
negatives and calls ``fuse``. A model's ``forward`` may put the features it already
computed into its output (``text_features`` / ``image_features``) so they are reused; if it
also sets ``fused``, that must equal ``fuse(text_features, image_features)`` (ITM reuses it
for the matched pairs).

Optionally a model declares the widths of these vectors as ``feature_dims``
(:class:`FeatureDims`), so that auxiliary losses can size their heads when they are
attached; without it the widths must be given in each auxiliary-loss config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class Features:
    """Unimodal features of a batch.

    Attributes:
        tokens: ``[B, L, d]`` token / patch / region states (after projection to the model width).
        mask: ``[B, L]`` bool, True for real tokens.
        pooled: ``[B, d_pooled]`` one vector per sample.
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor

    def select(self, index: Tensor) -> "Features":
        """Rows ``index`` (``[B']`` long) of every field, e.g. to pair texts with other images."""
        return Features(self.tokens.index_select(0, index), self.mask.index_select(0, index),
                        self.pooled.index_select(0, index))

    @property
    def batch_size(self) -> int:
        return int(self.pooled.shape[0])


@dataclass(frozen=True)
class FeatureDims:
    """Widths of the protocol's vectors, declared by a model as its ``feature_dims`` attribute.

    Attributes:
        text: width of ``encode_text(batch).pooled``.
        image: width of ``encode_image(batch).pooled``.
        fused: width of ``fuse(text, image)``.
    """

    text: int
    image: int
    fused: int

    def __post_init__(self) -> None:
        for name in ("text", "image", "fused"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FeatureDims.{name}: expected a positive int, got {value!r}")


# a pytree node (inside model outputs, see mmfuse.core.outputs): torch.export sees its tensors
torch.export.register_dataclass(Features, serialized_type_name="mmfuse.core.features.Features")

#: the methods a model needs for auxiliary losses (checked when they are attached)
PROTOCOL_METHODS: tuple[str, ...] = ("encode_text", "encode_image", "fuse")


def missing_protocol_methods(model: object) -> list[str]:
    """Names of the :class:`SupportsFusion` methods ``model`` lacks (empty when it has all)."""
    return [name for name in PROTOCOL_METHODS if not callable(getattr(model, name, None))]


@runtime_checkable
class SupportsFusion(Protocol):
    """Models usable with the ITC / ITM auxiliary losses."""

    def encode_text(self, batch: Mapping[str, Any]) -> Features: ...

    def encode_image(self, batch: Mapping[str, Any]) -> Features: ...

    def fuse(self, text: Features, image: Features) -> Tensor: ...
