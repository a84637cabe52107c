"""``timm-regions``: a grid of image region features from a timm ResNet (JML's visual input).

JML (section 3, "image region embeddings are obtained by pre-processing via ResNet") reads an
image as the last ResNet stage's spatial map: a 224×224 image through ResNet-50 (stride 32)
gives a 7×7 map of 2048-channel vectors, i.e. **49 region features**. Each region is a token; the
model projects them to its width ``d_model`` (as it does with the text tokens).

The map is average-pooled to ``grid_size × grid_size`` (a no-op at the default sizes), so other
input sizes, strides or backbones still give a fixed number of regions. Size keywords of timm's
``ResNet`` (``layers``, ``channels``, ``stem_width``, ``output_stride``) make small variants,
e.g. the 64×64 ResNet with 16…128 channels and a 4×4 grid of ``jml-tiny``.

Weights are random unless ``checkpoint_path`` names a local file of that architecture
(``.pth`` / ``.safetensors``), loaded with ``timm.models.load_checkpoint`` without its classifier
(``fc``). Nothing is ever downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfuse.core.config import ConfigError
from mmfuse.encoders.timm_backbone import (
    TimmBackboneEncoder,
    check_transform_options,
    checked_timm_name,
    eval_data_config,
    load_local_checkpoint,
)
from mmfuse.core.features import Features

NAME = "timm-regions"


class TimmRegionEncoder(TimmBackboneEncoder):
    """Region-grid encoder wrapping a timm ResNet (any timm CNN with ``forward_features``).

    Args:
        model_name: a timm model name, ``"resnet50"`` by default (2048 channels).
        checkpoint_path: local weights file for that architecture (random init when None).
        img_size: side of the square input image (224: a 7×7 map from a stride-32 ResNet).
        grid_size: side of the region grid; the last feature map is adaptively average-pooled
            to ``grid_size × grid_size`` regions (49 by default).
        layers, channels, stem_width, output_stride: timm ``ResNet`` keywords for smaller or
            differently shaped variants (None keeps the named model's value).
        drop_path_rate: stochastic depth inside the backbone.
        crop_pct: centre-crop fraction of the evaluation transform (1.0 = resize only);
            None keeps the model's default.
        train_transform: extra ``timm.data.create_transform`` arguments for training.
        freeze: keep the backbone's weights fixed (no gradients; BatchNorm statistics frozen
            because the backbone stays in eval mode even in ``train()``).

    ``forward(pixel_values [B, 3, img_size, img_size])`` returns ``Features(tokens [B, R, out_dim],
    mask [B, R] all True, pooled [B, out_dim])`` with ``R = grid_size²`` regions in row-major
    order and ``pooled`` their mean.
    """

    def __init__(
        self,
        model_name: str = "resnet50",
        checkpoint_path: str | None = None,
        img_size: int = 224,
        grid_size: int = 7,
        layers: list[int] | None = None,
        channels: list[int] | None = None,
        stem_width: int | None = None,
        output_stride: int | None = None,
        drop_path_rate: float = 0.0,
        crop_pct: float | None = None,
        train_transform: dict[str, Any] | None = None,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        import timm

        if img_size < 8:
            raise ConfigError(f"{NAME} img_size: expected an int >= 8, got {img_size}")
        if grid_size < 1:
            raise ConfigError(f"{NAME} grid_size: expected a positive int, got {grid_size}")
        sizes = {"layers": tuple(layers) if layers is not None else None,
                 "channels": tuple(channels) if channels is not None else None,
                 "stem_width": stem_width, "output_stride": output_stride}
        kwargs = {k: v for k, v in sizes.items() if v is not None}
        checked_timm_name(model_name, family="*resnet*", owner=NAME)
        try:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=0, global_pool="",
                                           drop_path_rate=drop_path_rate, **kwargs)
        except (TypeError, AssertionError, ValueError) as exc:
            raise ConfigError(f"{NAME}: cannot build {model_name!r} with {kwargs}: {exc}") from exc
        if not callable(getattr(self.model, "forward_features", None)) or not hasattr(self.model, "num_features"):
            raise ConfigError(f"{NAME} model_name: {model_name!r} has no forward_features / num_features")
        if checkpoint_path is not None:
            load_local_checkpoint(self.model, checkpoint_path, owner=NAME, architecture=f"{model_name!r} with {kwargs}")
        with torch.no_grad():  # the map size of this backbone at img_size (a CNN has no fixed input size)
            was_training = self.model.training
            self.model.eval()
            feature_map = self.model.forward_features(torch.zeros(1, 3, img_size, img_size))
            self.model.train(was_training)
        if feature_map.dim() != 4:
            raise ConfigError(f"{NAME} model_name: {model_name!r} does not produce a spatial feature map "
                              f"(got shape {tuple(feature_map.shape)}); use a CNN such as a ResNet")
        map_h, map_w = int(feature_map.shape[2]), int(feature_map.shape[3])
        if grid_size > min(map_h, map_w):
            raise ConfigError(f"{NAME} grid_size: {grid_size} is larger than the {map_h}×{map_w} feature map of "
                              f"{model_name!r} at img_size={img_size}; use grid_size <= {min(map_h, map_w)}")
        self.feature_map_size: tuple[int, int] = (map_h, map_w)
        self.out_dim: int = int(self.model.num_features)
        self.image_size: tuple[int, int] = (img_size, img_size)
        self.grid_size: tuple[int, int] = (grid_size, grid_size)
        self.num_regions: int = grid_size * grid_size
        self.num_prefix_tokens: int = 0
        self.data_config: dict[str, Any] = eval_data_config(self.model, self.image_size, crop_pct, owner=NAME)
        self.train_transform: dict[str, Any] = check_transform_options(train_transform or {}, owner=NAME)
        self._set_frozen(freeze)

    def forward(self, pixel_values: Tensor) -> Features:
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, *self.image_size):
            raise ValueError(f"{NAME}: pixel_values must be [B, 3, {self.image_size[0]}, {self.image_size[1]}], "
                             f"got {tuple(pixel_values.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feature_map = self.model.forward_features(pixel_values)  # [B, C, h, w]
        if tuple(feature_map.shape[2:]) != self.grid_size:
            feature_map = F.adaptive_avg_pool2d(feature_map, self.grid_size)
        regions = feature_map.flatten(2).transpose(1, 2)  # [B, R, C], row-major over the grid
        mask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
        return Features(tokens=regions, mask=mask, pooled=regions.mean(dim=1))

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, grid_size={self.grid_size}, out_dim={self.out_dim}"
