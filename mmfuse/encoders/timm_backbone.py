"""What the timm-based image encoders (``timm-vit``, ``timm-regions``) share.

Both wrap a ``timm.create_model(..., pretrained=False)`` backbone: the model name is checked
against timm's registry, weights come only from a local checkpoint file (never a hub), the
evaluation transform is timm's resolved data config, training augmentations are
``timm.data.create_transform`` options, and a frozen backbone stays in eval mode.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mmfuse.core.config import ConfigError
from mmfuse.core.names import close_matches


def checked_timm_name(model_name: str, *, family: str, owner: str) -> str:
    """``model_name`` if timm knows it, else a ConfigError with close matches from ``family``."""
    import timm

    if not timm.is_model(model_name):
        close = close_matches(model_name, timm.list_models(family), n=3, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ConfigError(f"{owner} model_name: {model_name!r} is not a timm model.{hint}")
    return model_name


def checkpoint_filter(model: nn.Module) -> Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]:
    """The model family's timm checkpoint filter, then removal of the classifier's weights."""
    family_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "head")
    own_keys = set(model.state_dict())

    def filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        if family_filter is not None:
            state_dict = family_filter(state_dict, model)
        return {k: v for k, v in state_dict.items() if k in own_keys or not k.startswith(f"{classifier}.")}

    return filter_fn


def load_local_checkpoint(model: nn.Module, checkpoint_path: str, *, owner: str, architecture: str) -> None:
    """Load a local ``.pth`` / ``.safetensors`` / ``.npz`` file into ``model`` (strict, classifier
    dropped); ConfigError naming ``checkpoint_path`` when it is missing or does not fit."""
    from timm.models import load_checkpoint

    file = Path(checkpoint_path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{owner} checkpoint_path: {checkpoint_path!r} is not a file (mmfuse never downloads)")
    try:
        load_checkpoint(model, str(file), strict=True, filter_fn=checkpoint_filter(model))
    except RuntimeError as exc:
        raise ConfigError(f"{owner} checkpoint_path: {checkpoint_path!r} does not fit {architecture}: {exc}") from exc


def eval_data_config(model: nn.Module, image_size: tuple[int, int], crop_pct: float | None, *,
                     owner: str) -> dict[str, Any]:
    """timm's resolved data config (mean, std, interpolation, crop) at ``image_size``."""
    from timm.data import resolve_data_config

    overrides: dict[str, Any] = {"input_size": (3, *image_size)}
    if crop_pct is not None:
        if not 0.0 < crop_pct <= 1.0:
            raise ConfigError(f"{owner} crop_pct: expected a fraction in (0, 1], got {crop_pct}")
        overrides["crop_pct"] = crop_pct
    return resolve_data_config(overrides, model=model)


def check_transform_options(options: dict[str, Any], *, owner: str) -> dict[str, Any]:
    """``options`` if each is a training-augmentation keyword of ``timm.data.create_transform``."""
    from timm.data import create_transform

    params = inspect.signature(create_transform).parameters
    reserved = {"input_size", "is_training", "mean", "std", "interpolation", "crop_pct", "crop_mode"}
    for key in options:
        if key in reserved or key not in params:
            raise ConfigError(
                f"{owner} train_transform.{key}: not an augmentation option of timm.data.create_transform "
                f"(allowed: {', '.join(sorted(set(params) - reserved))})"
            )
    return dict(options)


class TimmBackboneEncoder(nn.Module):
    """Base of the timm image encoders: holds ``self.model`` and keeps it in eval mode (no dropout,
    frozen batch-norm statistics) and without gradients when ``freeze`` was asked for."""

    model: nn.Module
    frozen: bool = False

    def _set_frozen(self, freeze: bool) -> None:
        self.frozen = freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def portable_options(self, options: dict[str, Any], folder: Path, prefix: str) -> dict[str, Any]:
        """Options without ``checkpoint_path``: the weights it held are in the saved ``model.safetensors``
        (a saved model must load without the original file)."""
        return {k: v for k, v in options.items() if k != "checkpoint_path"}

    def train(self, mode: bool = True) -> "TimmBackboneEncoder":
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self
