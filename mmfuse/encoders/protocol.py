"""What a model needs from its text and image encoders.

Any registered encoder that has these attributes can replace the built-in ones (``hf-text``,
``timm-vit``) in a model config. Both return :class:`~mmfuse.core.features.Features` in the
encoder's own width ``out_dim``; the model projects them to its common width.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from mmfuse.core.features import Features


@runtime_checkable
class TextEncoder(Protocol):
    """A text encoder.

    Attributes:
        out_dim: width of the returned token states.
        max_length: longest token sequence (special tokens included) it accepts.
        vocab_size: number of rows of its token embedding (ids must be below it).
        tokenizer: a ``transformers`` tokenizer producing the ids it expects.
    """

    out_dim: int
    max_length: int
    vocab_size: int
    tokenizer: Any

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Features:
        """``input_ids`` / ``attention_mask`` ``[B, L]`` → Features(tokens ``[B, L, out_dim]``,
        mask ``[B, L]`` bool, pooled ``[B, out_dim]``)."""
        ...


@runtime_checkable
class ImageEncoder(Protocol):
    """An image encoder producing a sequence of patch (or region) tokens.

    Attributes:
        out_dim: width of the returned tokens.
        image_size: ``(H, W)`` the input ``pixel_values`` must have.
        grid_size: ``(rows, cols)`` of the spatial tokens (for attention heatmaps).
        num_prefix_tokens: tokens before the spatial grid in the output (e.g. 1 for a class token).
        data_config: the timm data config (``input_size``, ``mean``, ``std``, ``interpolation``,
            ``crop_pct``, ...) used to build image transforms.
        train_transform: extra ``timm.data.create_transform`` arguments for training (augmentation).
    """

    out_dim: int
    image_size: tuple[int, int]
    grid_size: tuple[int, int]
    num_prefix_tokens: int
    data_config: dict[str, Any]
    train_transform: dict[str, Any]

    def __call__(self, pixel_values: Tensor) -> Features:
        """``pixel_values`` ``[B, 3, H, W]`` → Features(tokens ``[B, P, out_dim]``, mask ``[B, P]``,
        pooled ``[B, out_dim]``)."""
        ...
