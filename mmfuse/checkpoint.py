"""Saving and loading model weights: ``model.safetensors`` + ``config.json`` in one folder.

Both files are written atomically (temporary file + ``os.replace``), so an interrupted save
never leaves a half-written file. The folder is all a saved model needs (HF's
``save_pretrained`` contract): the config is made portable (:mod:`mmfuse.portable`; e.g. an
``hf-text`` encoder's tokenizer files are saved next to the weights) and records the
third-party plugins it was built with (:mod:`mmfuse.provenance`). ``load_pretrained`` rebuilds
the model from the stored config through :func:`mmfuse.build_model` and loads the weights
strictly; it accepts the model folder or a training run folder (``runs/X``, whose ``model/``
folder it uses).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model
from torch import nn

from mmfuse.utils.console import get_logger
from mmfuse.utils.io import atomic_write_text, atomic_write_with

logger = get_logger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: the model folder inside a training run folder (``Trainer`` exports the final model there)
RUN_MODEL_DIR = "model"


def resolve_model_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it holds a saved model, else ``path/model`` (a training run folder)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / RUN_MODEL_DIR / CONFIG_NAME).is_file():
        return path / RUN_MODEL_DIR
    reason = "the folder does not exist" if not path.exists() else (
        "expected a model folder written by save_pretrained, or a training run folder")
    raise FileNotFoundError(
        f"checkpoint {str(path)!r}: no {CONFIG_NAME}; neither it nor {str(path / RUN_MODEL_DIR)!r} holds a "
        f"trained model ({reason})"
    )


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str], config: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and config to ``directory``; returns the folder path.

    ``config`` defaults to ``model.mmfuse_config`` (set by :func:`mmfuse.build_model`). Files the
    config would otherwise reference elsewhere (tokenizers) are written into ``directory`` too.
    """
    config = config if config is not None else getattr(model, "mmfuse_config", None)
    if config is None:
        raise ValueError(
            "config: the model has no `mmfuse_config` (it was not built with mmfuse.build_model); "
            "pass config= explicitly"
        )
    from mmfuse.portable import portable_config
    from mmfuse.provenance import METADATA_KEY, saved_metadata

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {**portable_config(model, config, out), METADATA_KEY: saved_metadata(model)}
    # shared (tied) tensors are handled by safetensors' save_model
    atomic_write_with(out / WEIGHTS_NAME, lambda tmp: st_save_model(model, str(tmp)))
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    logger.debug("saved %s model to %s", config.get("model"), out)
    return out


def load_config_from(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r}: no {CONFIG_NAME} (expected a folder written by save_pretrained)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_pretrained(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu", **overrides: Any
) -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained` and load its weights (strict).

    ``directory`` is the model folder or a training run folder (its ``model/`` is used).
    """
    from mmfuse.builder import build_model
    from mmfuse.portable import checkpoint_root
    from mmfuse.provenance import METADATA_KEY, check_plugins_available

    directory = resolve_model_dir(directory)
    config = load_config_from(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r}: no {WEIGHTS_NAME}")
    check_plugins_available(config.pop(METADATA_KEY, None), f"checkpoint {str(directory)!r}")
    logger.debug("loading %s model from %s", config.get("model"), directory)
    with checkpoint_root(directory):
        model = build_model(config, **overrides)
    missing, unexpected = st_load_model(model, str(weights), strict=False, device=str(map_location))
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {str(directory)!r} does not match its config: "
            f"missing keys {sorted(missing)[:10]}, unexpected keys {sorted(unexpected)[:10]}"
        )
    return model.to(map_location)
