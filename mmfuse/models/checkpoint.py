"""Saving and loading model weights: ``model.safetensors`` + ``config.json`` in one folder.

Both files are written atomically (temporary file + ``os.replace``), so an interrupted save
never leaves a half-written file. The folder is all a saved model needs (HF's
``save_pretrained`` contract): the config is made portable (:mod:`mmfuse.core.portable`; e.g. an
``hf-text`` encoder's tokenizer files are saved next to the weights) and records the
third-party plugins it was built with (:mod:`mmfuse.core.provenance`). ``load_pretrained`` rebuilds
the model from the stored config through :func:`mmfuse.build_model` and loads the weights
strictly; it accepts the model folder or a training run folder (``runs/X``, whose ``model/``
folder it uses).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model
from torch import nn

from mmfuse.utils.console import get_logger
from mmfuse.utils.io import atomic_write_text, atomic_write_with, json_dumps, read_json_file

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
    from mmfuse.core.portable import portable_config
    from mmfuse.core.provenance import METADATA_KEY, saved_metadata

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {**portable_config(model, config, out), METADATA_KEY: saved_metadata(model)}
    # shared (tied) tensors are handled by safetensors' save_model
    atomic_write_with(out / WEIGHTS_NAME, lambda tmp: st_save_model(model, str(tmp)))
    atomic_write_text(out / CONFIG_NAME, json_dumps(config, indent=2) + "\n")
    logger.debug("saved %s model to %s", config.get("model"), out)
    return out


class CheckpointError(ValueError):
    """A model folder whose files are missing, truncated, corrupt, inconsistent or non-finite."""


def load_config_from(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r}: no {CONFIG_NAME} (expected a folder written by save_pretrained)")
    config = read_json_file(path, "checkpoint file")
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint file {str(path)!r}: expected a JSON object (a model config), "
                              f"got {type(config).__name__}")
    return config


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_weights_file(path: str | os.PathLike[str], model: nn.Module) -> None:
    """Raise :class:`CheckpointError` naming ``path`` unless it is a readable safetensors file with
    exactly ``model``'s tensor names and shapes (read from the header; no data is loaded)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path.parent)!r}: no {path.name}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint file {str(path)!r}: not a readable safetensors file "
                              f"(truncated or corrupt): {exc}") from None
    # tied weights are stored once (safetensors' save_model); compare on the names the file has
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(n for n in shapes if n in expected and shapes[n] != expected[n])
    if unexpected or wrong:
        parts = []
        if wrong:
            n = wrong[0]
            parts.append(f"{len(wrong)} tensor(s) have another shape than the model built from {CONFIG_NAME}, "
                         f"e.g. {n!r}: {list(shapes[n])} in the file, {list(expected[n])} in the model")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) the model does not have, e.g. {unexpected[0]!r}")
        raise CheckpointError(f"checkpoint file {str(path)!r} does not match {CONFIG_NAME} (edited config?): "
                              + "; ".join(parts))


def load_weights(model: nn.Module, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Load ``path`` (a ``model.safetensors``) into ``model`` after checking it: readable, the
    model's names and shapes, every tensor finite. Errors are one :class:`CheckpointError` line
    naming the file."""
    path = Path(path)
    check_weights_file(path, model)
    try:
        missing, unexpected = st_load_model(model, str(path), strict=False, device=str(device))
    except Exception as exc:  # the header was fine, the data is not (truncated payload)
        raise CheckpointError(f"checkpoint file {str(path)!r}: cannot be read (truncated or corrupt): "
                              f"{str(exc).splitlines()[0][:200]}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint file {str(path)!r} does not match the model: "
            f"missing keys {sorted(missing)[:5]}, unexpected keys {sorted(unexpected)[:5]}"
        )
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise CheckpointError(
            f"checkpoint file {str(path)!r}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[0]!r}); "
            "the run that wrote it diverged, use an earlier checkpoint"
        )
    return model


def load_pretrained(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu", **overrides: Any
) -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained` and load its weights (strict, checked:
    see :func:`load_weights`).

    ``directory`` is the model folder or a training run folder (its ``model/`` is used).
    """
    from mmfuse.models.builder import build_model
    from mmfuse.core.portable import checkpoint_root
    from mmfuse.core.registry import RegistryError
    from mmfuse.core.provenance import METADATA_KEY, check_plugins_available

    directory = resolve_model_dir(directory)
    config = load_config_from(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r}: no {WEIGHTS_NAME}")
    check_plugins_available(config.pop(METADATA_KEY, None), f"checkpoint {str(directory)!r}")
    logger.debug("loading %s model from %s", config.get("model"), directory)
    try:
        with checkpoint_root(directory):
            model = build_model(config, **overrides)
    except (ValueError, TypeError, KeyError, RegistryError) as exc:
        raise CheckpointError(f"checkpoint file {str(directory / CONFIG_NAME)!r}: cannot build the model: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    load_weights(model, weights, map_location)
    return model.to(map_location)
