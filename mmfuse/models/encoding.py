"""Text and image encoders projected to a common width: the input stage of every model.

``radm`` reads ``input_ids`` through a BERT-family text encoder (``hf-text``) and
``pixel_values`` through ViT patches (``timm-vit``); ``jml`` and ``jml-relation`` read regions
(``timm-regions``; paper: "T is the output of another BERT for X", "O is the output of another
ResNet for I"). All of them project both sides to ``d_model`` with :class:`ProjectedEncoders`.
The image branch is optional (``jml-tiny-text`` has none).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from mmfuse.core.batch import check_image_mask, check_mapping, check_pixel_values, check_text_inputs
from mmfuse.core.config import ConfigError
from mmfuse.core.features import Features
from mmfuse.data.processing import MultimodalProcessor, build_image_transform
from mmfuse.fusion.pooling import Pooling, pool

TEXT_ENCODER_ATTRIBUTES = ("out_dim", "max_length", "vocab_size", "tokenizer")
IMAGE_ENCODER_ATTRIBUTES = ("out_dim", "image_size", "data_config")


def require_module(component: object, attributes: tuple[str, ...], where: str, model: str) -> nn.Module:
    """``component``, checked to be an ``nn.Module`` with ``attributes`` (what ``model`` reads of it)."""
    if not isinstance(component, nn.Module):
        raise TypeError(f"{where}: expected an nn.Module (build one from a config with "
                        f"mmfuse.build_component), got {type(component).__name__}")
    missing = [a for a in attributes if not hasattr(component, a)]
    if missing:
        raise ConfigError(f"{where}: {type(component).__name__} lacks {', '.join(missing)} "
                          f"(required of a {where.replace('_', ' ')} by the {model} model)")
    return component


class ProjectedEncoders(nn.Module):
    """A text encoder and an optional image encoder, each followed by ``Linear → d_model`` + dropout.

    Args:
        text_encoder: a text encoder module (:class:`~mmfuse.encoders.protocol.TextEncoder`:
            ``out_dim``, ``max_length``, ``vocab_size``, ``tokenizer``), e.g. ``hf-text``.
        image_encoder: an image encoder module (``out_dim``, ``image_size``, ``data_config``,
            plus ``image_attributes``), e.g. ``timm-vit`` or ``timm-regions``; None for text only.
        d_model: the common width.
        dropout: dropout on the projected tokens.
        model: model name used in error messages.
        pooling: how ``pooled`` is made from the projected tokens: ``"mean"`` (masked mean) or
            ``"cls"`` (the first token).
        image_attributes: further attributes the model needs of its image encoder.

    ``encode_text`` → ``Features(tokens [B, L, d_model], mask [B, L], pooled [B, d_model])``;
    ``encode_image`` → ``Features(tokens [B, R, d_model], mask [B, R], pooled)``, the mask False
    on every token of a placeholder image (``image_mask`` False).
    """

    def __init__(self, text_encoder: nn.Module, image_encoder: nn.Module | None, d_model: int,
                 dropout: float, model: str, pooling: Pooling = "mean",
                 image_attributes: tuple[str, ...] = ()) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
            raise ConfigError(f"d_model: expected a positive int, got {d_model!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout: expected a probability in [0, 1), got {dropout}")
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"pooling: expected 'mean' or 'cls', got {pooling!r}")
        self.pooling: Pooling = pooling
        self.text_encoder = require_module(text_encoder, TEXT_ENCODER_ATTRIBUTES, "text_encoder", model)
        self.text_proj = nn.Sequential(nn.Linear(self.text_encoder.out_dim, d_model), nn.Dropout(dropout))
        if image_encoder is not None:
            self.image_encoder = require_module(image_encoder, IMAGE_ENCODER_ATTRIBUTES + tuple(image_attributes),
                                                "image_encoder", model)
            self.image_proj = nn.Sequential(nn.Linear(self.image_encoder.out_dim, d_model), nn.Dropout(dropout))
        else:
            self.image_encoder = None
            self.image_proj = None

    @property
    def has_image(self) -> bool:
        return self.image_encoder is not None

    def text_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Checked ``input_ids``, ``attention_mask`` and optional ``token_type_ids`` (``[B, L]``)."""
        return check_text_inputs(check_mapping(batch), self.text_encoder.vocab_size, self.text_encoder.max_length)

    def image_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor | None]:
        """Checked ``pixel_values [B, 3, H, W]`` and optional ``image_mask [B]``."""
        if self.image_encoder is None:
            raise TypeError("this model has no image branch (image_encoder is None)")
        pixels = check_pixel_values(check_mapping(batch), tuple(self.image_encoder.image_size))
        return pixels, check_image_mask(batch, pixels.shape[0])

    def encode_text(self, ids: Tensor, mask: Tensor, types: Tensor | None) -> Features:
        features = self.text_encoder(ids, mask, types)
        tokens = self.text_proj(features.tokens)
        return Features(tokens, features.mask, pool(tokens, features.mask, self.pooling))

    def encode_image(self, pixels: Tensor, image_mask: Tensor | None) -> Features:
        if self.image_encoder is None or self.image_proj is None:
            raise TypeError("this model has no image branch (image_encoder is None)")
        features = self.image_encoder(pixels)
        tokens = self.image_proj(features.tokens)
        mask = features.mask if image_mask is None else features.mask & image_mask[:, None]
        return Features(tokens, mask, pool(tokens, mask, self.pooling))

    def get_processor(self, train: bool = False):
        """A :class:`~mmfuse.data.processing.MultimodalProcessor` with the text encoder's tokenizer and,
        with an image branch, the image encoder's timm transform (else images are refused)."""
        if self.image_encoder is None:
            return TextOnlyProcessor(self.text_encoder.tokenizer, self.text_encoder.max_length)
        transform = build_image_transform(self.image_encoder.data_config, train=train,
                                          train_options=getattr(self.image_encoder, "train_transform", None))
        return MultimodalProcessor(self.text_encoder.tokenizer, transform, self.text_encoder.max_length)


def _no_images(image: Any) -> Tensor:
    raise TypeError("this model is text-only (no image encoder); call its processor with texts only")


class TextOnlyProcessor(MultimodalProcessor):
    """The processor of a model without an image branch: ``image_transform`` is None (collators then
    leave ``pixel_values`` out) and images are refused with a clear error."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        super().__init__(tokenizer, _no_images, max_length)
        self.image_transform = None  # type: ignore[assignment]

    def transform_images(self, images: Any) -> Tensor:
        return _no_images(images)


class ProjectedEncodersMixin:
    """What a model built on :class:`ProjectedEncoders` (as ``self.encoders``) exposes of them:
    the processor making its batches and its two encoders (RADM, JML and JML's relation module)."""

    encoders: ProjectedEncoders

    def get_processor(self, train: bool = False):
        """The :class:`~mmfuse.data.processing.MultimodalProcessor` making this model's batches: its
        tokenizer and, with an image branch, the image encoder's timm transform (``train=True``:
        with its augmentation)."""
        return self.encoders.get_processor(train)

    @property
    def text_encoder(self) -> nn.Module:
        return self.encoders.text_encoder

    @property
    def image_encoder(self) -> nn.Module | None:
        """The image encoder, or None for a text-only model."""
        return self.encoders.image_encoder
