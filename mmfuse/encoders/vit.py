"""``timm-vit``: image patch tokens from a timm Vision Transformer.

Any timm ViT (``vit_base_patch16_224``, ``deit_small_patch16_224``, ...) works; size keywords
(``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``) make
smaller or differently shaped variants, e.g. the 64×64 / 8×8-patch ViT of ``radm-tiny``.
Weights are random unless ``checkpoint_path`` names a local file (``.pth`` / ``.safetensors`` /
``.npz``) of that architecture; it is loaded with ``timm.models.load_checkpoint`` through the
model's own checkpoint filter (which resamples position embeddings to a new ``img_size``),
dropping the classification head. Nothing is ever downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
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

NAME = "timm-vit"


class TimmViTEncoder(TimmBackboneEncoder):
    """Patch-token encoder wrapping a timm ViT.

    Args:
        model_name: a timm model name, e.g. ``"vit_base_patch16_224"``.
        checkpoint_path: local weights file for that architecture (random init when None).
        img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio: timm model keywords
            (None keeps the named model's value).
        drop_rate, drop_path_rate: dropout / stochastic depth inside the ViT.
        include_class_token: put the class token first in the returned tokens (else patches only).
        crop_pct: centre-crop fraction of the evaluation transform (1.0 = resize only);
            None keeps the model's default (0.9 for most ViTs).
        train_transform: extra ``timm.data.create_transform`` arguments for training, e.g.
            ``{"scale": [0.6, 1.0], "color_jitter": 0.0}``.
        freeze: keep the ViT's weights fixed (no gradients; dropout off even in ``train()``).

    ``forward(pixel_values [B, 3, H, W])`` returns ``Features(tokens [B, P, out_dim],
    mask [B, P] all True, pooled [B, out_dim])`` with ``P = grid rows · cols`` (+1 with the
    class token); ``pooled`` is the class token's state (mean of the patches if the model has none).
    """

    def __init__(
        self,
        model_name: str = "vit_base_patch16_224",
        checkpoint_path: str | None = None,
        img_size: int | None = None,
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        include_class_token: bool = False,
        crop_pct: float | None = None,
        train_transform: dict[str, Any] | None = None,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        import timm

        sizes = {"img_size": img_size, "patch_size": patch_size, "embed_dim": embed_dim, "depth": depth,
                 "num_heads": num_heads, "mlp_ratio": mlp_ratio}
        kwargs = {k: v for k, v in sizes.items() if v is not None}
        checked_timm_name(model_name, family="*vit*", owner=NAME)
        try:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=0,
                                           drop_rate=drop_rate, drop_path_rate=drop_path_rate, **kwargs)
        except (TypeError, AssertionError, ValueError) as exc:
            raise ConfigError(f"{NAME}: cannot build {model_name!r} with {kwargs}: {exc}") from exc
        if not hasattr(self.model, "patch_embed") or not hasattr(self.model, "num_prefix_tokens"):
            raise ConfigError(f"{NAME} model_name: {model_name!r} is not a Vision Transformer (no patch embedding)")
        if checkpoint_path is not None:
            load_local_checkpoint(self.model, checkpoint_path, owner=NAME, architecture=f"{model_name!r} with {kwargs}")

        has_class_token = getattr(self.model, "cls_token", None) is not None
        if include_class_token and not has_class_token:
            raise ConfigError(f"{NAME} include_class_token: {model_name!r} has no class token")
        self.include_class_token = include_class_token
        self.has_class_token = has_class_token
        self.num_prefix_tokens: int = 1 if include_class_token else 0
        self.out_dim: int = int(self.model.num_features)
        self.image_size: tuple[int, int] = tuple(int(s) for s in self.model.patch_embed.img_size)  # type: ignore[assignment]
        self.grid_size: tuple[int, int] = tuple(int(s) for s in self.model.patch_embed.grid_size)  # type: ignore[assignment]
        self.data_config: dict[str, Any] = eval_data_config(self.model, self.image_size, crop_pct, owner=NAME)
        self.train_transform: dict[str, Any] = check_transform_options(train_transform or {}, owner=NAME)
        self._set_frozen(freeze)

    def forward(self, pixel_values: Tensor) -> Features:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            states = self.model.forward_features(pixel_values)  # [B, prefix + rows*cols, out_dim]
        patches = states[:, self.model.num_prefix_tokens:]
        if self.has_class_token:
            pooled = states[:, 0]
        else:
            pooled = patches.mean(dim=1)
        tokens = torch.cat([states[:, :1], patches], dim=1) if self.include_class_token else patches
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Features(tokens=tokens, mask=mask, pooled=pooled)
