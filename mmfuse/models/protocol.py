"""The small protocol through which auxiliary losses (ITC, ITM) talk to any model.

A model supports auxiliary losses when it implements :class:`SupportsFusion`:

* ``encode_text(batch) -> Features``   token states, mask and a pooled vector of the text;
* ``encode_image(batch) -> Features``  the same for the image;
* ``fuse(text, image) -> Tensor``      the fused representation ``[B, d_fused]`` of *any*
  pairing of text and image features (row i of ``text`` with row i of ``image``).

ITC uses the pooled vectors; ITM re-pairs rows (``Features.select``) to build hard
negatives and calls ``fuse``. A model's ``forward`` may put the features it already
computed into its output (``text_features`` / ``image_features``) so they are reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

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


@runtime_checkable
class SupportsFusion(Protocol):
    """Models usable with the ITC / ITM auxiliary losses."""

    def encode_text(self, batch: Mapping[str, Any]) -> Features: ...

    def encode_image(self, batch: Mapping[str, Any]) -> Features: ...

    def fuse(self, text: Features, image: Features) -> Tensor: ...
