"""Preprocessing of raw texts and images into a model batch.

A :class:`MultimodalProcessor` pairs the text encoder's tokenizer with the image encoder's timm
transform (``timm.data.create_transform`` on the encoder's data config: resize / centre crop /
normalise for evaluation, random-resized-crop and flips for training). Models build theirs with
``model.get_processor(train=False)``; collators call it on lists of raw samples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor

ImageTransform = Callable[[Image.Image], Tensor]


def build_image_transform(
    data_config: Mapping[str, Any], train: bool = False, train_options: Mapping[str, Any] | None = None
) -> ImageTransform:
    """The timm transform for ``data_config`` (``timm.data.resolve_data_config`` output).

    ``train=True`` gives the augmenting transform, tuned by ``train_options`` (any
    ``create_transform`` keyword such as ``scale``, ``hflip``, ``color_jitter``).
    """
    from timm.data import create_transform

    options = dict(train_options or {}) if train else {}
    for key in ("scale", "ratio"):  # configs store tuples as lists
        if isinstance(options.get(key), list):
            options[key] = tuple(options[key])
    return create_transform(**dict(data_config), is_training=train, **options)


def _check_list(values: Any, name: str, item_type: type, expected: str) -> None:
    if isinstance(values, (str, Image.Image)) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: expected {expected}, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{name}: expected {expected}, got an empty list")
    module = "" if item_type.__module__ == "builtins" else f"{item_type.__module__}."
    for i, value in enumerate(values):
        if not isinstance(value, item_type):
            raise TypeError(f"{name}[{i}]: expected {module}{item_type.__qualname__}, got {type(value).__name__}")


class MultimodalProcessor:
    """``processor(texts, images) -> batch``: tokenise texts and transform images.

    Args:
        tokenizer: a ``transformers`` tokenizer (pads to the longest text, truncates to ``max_length``).
        image_transform: PIL image → ``[3, H, W]`` float tensor (e.g. from :func:`build_image_transform`).
        max_length: longest token sequence, special tokens included.

    Returns (``__call__``) a dict with ``input_ids`` ``[B, L]`` long, ``attention_mask`` ``[B, L]``
    long (1 = real token), ``token_type_ids`` ``[B, L]`` when the tokenizer makes them, and
    ``pixel_values`` ``[B, 3, H, W]`` float. Either input may be None to process only the other.
    """

    def __init__(self, tokenizer: Any, image_transform: ImageTransform, max_length: int) -> None:
        if not callable(tokenizer):
            raise TypeError(f"tokenizer: expected a callable transformers tokenizer, got {type(tokenizer).__name__}")
        if not callable(image_transform):
            raise TypeError(f"image_transform: expected a callable, got {type(image_transform).__name__}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length: expected an int >= 2, got {max_length!r}")
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.max_length = max_length

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token ids, attention mask (and token types) of ``texts``, padded to the longest."""
        _check_list(texts, "texts", str, "a list of str")
        encoded = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return {key: value.long() for key, value in encoded.items()}

    def transform_images(self, images: Sequence[Image.Image]) -> Tensor:
        """``[B, 3, H, W]`` float tensor of the transformed (RGB) images."""
        _check_list(images, "images", Image.Image, "a list of PIL images")
        return torch.stack([self.image_transform(image.convert("RGB")) for image in images])

    def __call__(
        self, texts: Sequence[str] | None = None, images: Sequence[Image.Image] | None = None
    ) -> dict[str, Tensor]:
        if texts is None and images is None:
            raise ValueError("processor: give texts, images or both")
        if texts is not None:
            _check_list(texts, "texts", str, "a list of str")
        if images is not None:
            _check_list(images, "images", Image.Image, "a list of PIL images")
        if texts is not None and images is not None and len(texts) != len(images):
            raise ValueError(f"processor: {len(texts)} texts but {len(images)} images; they are paired by position")
        batch: dict[str, Tensor] = {}
        if texts is not None:
            batch.update(self.tokenize(texts))
        if images is not None:
            batch["pixel_values"] = self.transform_images(images)
        return batch

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(tokenizer={type(self.tokenizer).__name__}, max_length={self.max_length}, "
                f"image_transform={self.image_transform})")
