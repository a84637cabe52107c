"""mmfuse: multimodal (text + image) fusion models for sentiment analysis.

Quick start::

    import mmfuse
    mmfuse.list_components()              # {"encoder": [...], "fusion": [...], ...}
    model = mmfuse.build_model("radm-tiny")
    model.save_pretrained("my-model")     # config.json + model.safetensors (+ tokenizer files)
    model = mmfuse.from_pretrained("my-model")   # or a training run folder, e.g. "runs/demo"

``import mmfuse`` also completes the fused operator ``torch.ops.mmfuse.gated_residual_attention``
(kernels, fake implementation, autograd; see :mod:`mmfuse.ops`), as torchvision does for its ops.

Components, models, presets, data sets and tasks register through pluggy (see
:mod:`mmfuse.core.registry`); third-party packages add theirs through the ``mmfuse`` entry-point
group or :func:`register_plugin`. The package layers are described in docs/architecture.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# First: loads mmfuse._C and registers the op's fake implementation and autograd kernel.
from mmfuse import ops  # noqa: E402,F401  isort: skip

from mmfuse.core import __version__
from mmfuse.core.build import ComponentSpec, build_component
from mmfuse.core.config import ConfigError
from mmfuse.core.registry import (
    DuplicateComponentError,
    RegistryError,
    UnknownComponentError,
    get_component,
    get_registry,
    hookimpl,
    list_components,
    register_plugin,
    unregister_plugin,
)
from mmfuse.models.builder import build_model, resolve_model_config


def save_pretrained(model: Any, directory: str | os.PathLike[str]) -> Path:
    """Save any model built by :func:`build_model` to ``directory`` (see :mod:`mmfuse.models.checkpoint`)."""
    from mmfuse.models.checkpoint import save_pretrained as _save

    return _save(model, directory)


def from_pretrained(path: str | os.PathLike[str], map_location: Any = "cpu", **overrides: Any) -> Any:
    """Load a model saved by :func:`save_pretrained`, from its folder or a training run folder (``runs/X``)."""
    from mmfuse.models.checkpoint import load_pretrained

    return load_pretrained(path, map_location=map_location, **overrides)


__all__ = [
    "save_pretrained",
    "from_pretrained",
    "__version__",
    "build_model",
    "build_component",
    "ComponentSpec",
    "resolve_model_config",
    "list_components",
    "get_component",
    "get_registry",
    "register_plugin",
    "unregister_plugin",
    "hookimpl",
    "ConfigError",
    "RegistryError",
    "UnknownComponentError",
    "DuplicateComponentError",
]
