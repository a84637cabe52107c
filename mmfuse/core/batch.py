"""Checks of model batches, with errors that name the key, the expected and the actual value.

A wrong batch must fail at the model's door, not as an index error deep inside an embedding
or a convolution. Models call these helpers on their inputs (cheap metadata checks plus one
reduction for the token-id range).

Checks of tensor *values* (token-id range, 0/1 masks, label ranges) run only in eager mode
(:func:`checking_values`): they need the values on the host, i.e. a device sync and, under
``torch.compile`` / ``torch.export``, a graph break. Compiled and exported models rely on the
processor / collator to build valid batches; the metadata checks (keys, dtypes, shapes) run
everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

_INT_DTYPES = (torch.long, torch.int, torch.int16, torch.int8, torch.uint8)


def checking_values() -> bool:
    """True in eager mode: run the checks that read tensor values (skipped while compiling)."""
    return not torch.compiler.is_compiling()


class BatchError(ValueError):
    """A batch that does not fit the model (missing key, wrong shape or size)."""


def check_mapping(batch: Any) -> Mapping[str, Any]:
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch: expected a dict of tensors (input_ids, attention_mask, pixel_values, ...), "
                        f"got {type(batch).__name__}")
    return batch


def get_tensor(batch: Mapping[str, Any], key: str, expected: str, hint: str = "") -> Tensor:
    """``batch[key]``, which must be a tensor; ``expected`` describes it in the error."""
    if key not in batch:
        present = ", ".join(sorted(map(str, batch))) or "none"
        raise BatchError(f"batch is missing {key!r} ({expected}); keys present: {present}{hint}")
    value = batch[key]
    if not isinstance(value, Tensor):
        raise TypeError(f"{key}: expected a torch.Tensor ({expected}), got {type(value).__name__}")
    return value


def check_text_inputs(
    batch: Mapping[str, Any], vocab_size: int, max_length: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate ``input_ids`` / ``attention_mask`` (/ ``token_type_ids``); return them.

    ``input_ids`` ``[B, L]`` integer ids in ``[0, vocab_size)``, ``L <= max_length``;
    ``attention_mask`` ``[B, L]`` of 0/1 (int or bool); ``token_type_ids`` optional ``[B, L]``.
    """
    hint = "; build batches with model.get_processor()"
    ids = get_tensor(batch, "input_ids", "LongTensor [B, L] of token ids", hint)
    mask = get_tensor(batch, "attention_mask", "[B, L] with 1 for real tokens, 0 for padding", hint)
    if ids.dtype not in _INT_DTYPES:
        raise TypeError(f"input_ids: expected integer token ids (torch.long), got {ids.dtype}")
    if ids.dim() != 2:
        raise BatchError(f"input_ids: expected shape [B, L], got {tuple(ids.shape)}")
    if ids.shape[1] > max_length:
        raise BatchError(f"input_ids: {ids.shape[1]} tokens per text, but the text encoder takes at most "
                         f"{max_length} (max_length){hint}")
    if mask.dtype not in (*_INT_DTYPES, torch.bool):
        raise TypeError(f"attention_mask: expected an integer or bool tensor (1/True = real token), got {mask.dtype}")
    if mask.shape != ids.shape:
        raise BatchError(f"attention_mask: expected the shape of input_ids {tuple(ids.shape)}, got {tuple(mask.shape)}")
    if ids.numel() and checking_values():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise BatchError(f"input_ids: token id {bad} is outside the text encoder's vocabulary [0, {vocab_size}) "
                             f"(was the batch made with another tokenizer?)")
    if mask.dtype != torch.bool and checking_values() and bool(((mask != 0) & (mask != 1)).any()):
        raise BatchError("attention_mask: expected only 0 (padding) and 1 (real token) values")
    types = batch.get("token_type_ids")
    if types is not None:
        if not isinstance(types, Tensor) or types.dtype not in _INT_DTYPES:
            raise TypeError(f"token_type_ids: expected an integer tensor [B, L], got "
                            f"{types.dtype if isinstance(types, Tensor) else type(types).__name__}")
        if types.shape != ids.shape:
            raise BatchError(f"token_type_ids: expected the shape of input_ids {tuple(ids.shape)}, got {tuple(types.shape)}")
    return ids, mask, types


def check_pixel_values(batch: Mapping[str, Any], image_size: tuple[int, int]) -> Tensor:
    """Validate ``pixel_values`` ``[B, 3, H, W]`` floating point with ``(H, W) == image_size``."""
    pixels = get_tensor(batch, "pixel_values", f"float [B, 3, {image_size[0]}, {image_size[1]}]",
                        "; build batches with model.get_processor()")
    if not pixels.is_floating_point():
        raise TypeError(f"pixel_values: expected a floating-point tensor (normalised images), got {pixels.dtype}")
    if pixels.dim() != 4 or pixels.shape[1] != 3:
        raise BatchError(f"pixel_values: expected shape [B, 3, H, W], got {tuple(pixels.shape)}")
    if tuple(pixels.shape[2:]) != tuple(image_size):
        raise BatchError(
            f"pixel_values: expected {image_size[0]}×{image_size[1]} images (the image encoder's input size), got "
            f"{pixels.shape[2]}×{pixels.shape[3]}; resize them with model.get_processor()"
        )
    return pixels


def check_image_mask(batch: Mapping[str, Any], batch_size: int) -> Tensor | None:
    """Optional ``image_mask`` ``[B]`` bool (False = placeholder image of a text-only sample)."""
    mask = batch.get("image_mask")
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"image_mask: expected a bool tensor [B] (True = real image), got "
                        f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
    if tuple(mask.shape) != (batch_size,):
        raise BatchError(f"image_mask: expected shape [{batch_size}], got {tuple(mask.shape)}")
    return mask


def check_batch_sizes(sizes: Mapping[str, int]) -> int:
    """All entries of ``sizes`` (key → first dimension) must agree; returns the batch size."""
    values = list(sizes.values())  # compared, not hashed: symbolic sizes (torch.export) have no hash
    if any(value != values[0] for value in values[1:]):
        detail = ", ".join(f"{key}: {size}" for key, size in sizes.items())
        raise BatchError(f"batch: mismatched batch sizes ({detail})")
    return values[0]
