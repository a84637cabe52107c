"""The fusion-block protocol: what a model expects of any registered ``fusion`` component.

A fusion block mixes a text sequence and an image sequence of the same width and returns both,
updated. RADM's interaction stack (``radm-interaction``), its self-fusion encoder
(``self-fusion``) and third-party blocks (FiLM, gated bilinear, ...) all follow it, so a config
can swap one for another:

* the factory takes ``d_model: int`` as a keyword argument, injected by the model (it may not be
  set in the block's config); every other argument is the block's own config;
* ``forward(text [B, Lt, d], text_mask [B, Lt] bool, image [B, Li, d], image_mask [B, Li] bool,
  return_attentions: bool = False) -> FusionOutput``; masks are True for real tokens and the
  block must keep padded positions from influencing real ones;
* the returned sequences keep their shapes; ``attentions`` is None unless asked for, and then a
  dict *stream name* → one ``[B, H, Lq, Lk]`` tensor per layer (names unique across the blocks of
  one model, e.g. ``"tt"``, ``"ii"``, ``"ti"``, ``"it"``, ``"joint"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class FusionOutput:
    """Output of a fusion block.

    Attributes:
        text: ``[B, Lt, d]`` updated text states.
        image: ``[B, Li, d]`` updated image states.
        attentions: stream name → per-layer ``[B, H, Lq, Lk]`` tensors, or None. RADM's blocks
            report the pre-softmax scores ``n`` that thread between layers; the attention weights
            are their softmax over the valid keys (:func:`mmfuse.viz.attention_weights`).
    """

    text: Tensor
    image: Tensor
    attentions: dict[str, list[Tensor]] | None = None


@runtime_checkable
class FusionBlock(Protocol):
    """Structural type of fusion blocks (see the module docstring)."""

    def __call__(
        self, text: Tensor, text_mask: Tensor, image: Tensor, image_mask: Tensor, return_attentions: bool = False
    ) -> FusionOutput: ...


def check_fusion_output(output: object, text: Tensor, image: Tensor, where: str) -> FusionOutput:
    """Raise a clear error when a (third-party) block broke the protocol; return ``output``."""
    if not isinstance(output, FusionOutput):
        raise TypeError(f"{where}: a fusion block must return mmfuse.fusion.FusionOutput, got {type(output).__name__}")
    for name, got, expected in (("text", output.text, text), ("image", output.image, image)):
        if not isinstance(got, Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise ValueError(f"{where}: FusionOutput.{name} must keep the input shape {tuple(expected.shape)}, got {shape}")
    return output


def check_fusion_inputs(text: Tensor, text_mask: Tensor, image: Tensor, image_mask: Tensor, d_model: int,
                        where: str) -> None:
    """Shape / dtype checks of a fusion block's inputs, with messages naming the argument."""
    for name, x in (("text", text), ("image", image)):
        if x.dim() != 3 or x.shape[-1] != d_model:
            raise ValueError(f"{where}: {name} must be [B, L, d_model={d_model}], got {tuple(x.shape)}")
    if image.shape[0] != text.shape[0]:
        raise ValueError(f"{where}: text has batch size {text.shape[0]} but image has {image.shape[0]}")
    for name, mask, x in (("text_mask", text_mask, text), ("image_mask", image_mask, image)):
        if mask.dtype != torch.bool:
            raise TypeError(f"{where}: {name} must be a bool tensor (True = real token), got {mask.dtype}")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{where}: {name} must have shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
