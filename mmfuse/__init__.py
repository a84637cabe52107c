"""mmfuse: multimodal (text + image) fusion models for sentiment analysis.

Quick start::

    import mmfuse
    mmfuse.list_components()              # {"encoder": [...], "fusion": [...], ...}
    model = mmfuse.build_model("radm-tiny")
    model.save_pretrained("my-model")     # config.json + model.safetensors (+ tokenizer files)
    model = mmfuse.from_pretrained("my-model")   # or a training run folder, e.g. "runs/demo"

``import mmfuse`` also completes the fused operator ``torch.ops.mmfuse.gated_residual_attention``
(kernels, fake implementation, autograd; see :mod:`mmfuse.ops`), as torchvision does for its ops.

Components register through pluggy (see :mod:`mmfuse.registry`); third-party packages add
theirs through the ``mmfuse`` entry-point group or :func:`register_plugin`.
"""

from __future__ import annotations

__version__ = "0.1.0"

import os
from pathlib import Path
from typing import Any

# First: loads mmfuse._C and registers the op's fake implementation and autograd kernel.
from mmfuse import ops  # noqa: E402,F401  isort: skip

from mmfuse.builder import ComponentSpec, build_component, build_model, resolve_model_config
from mmfuse.config import ConfigError
from mmfuse.registry import (
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


def save_pretrained(model: Any, directory: str | os.PathLike[str]) -> Path:
    """Save any model built by :func:`build_model` to ``directory`` (see :mod:`mmfuse.checkpoint`)."""
    from mmfuse.checkpoint import save_pretrained as _save

    return _save(model, directory)


def from_pretrained(path: str | os.PathLike[str], map_location: Any = "cpu", **overrides: Any) -> Any:
    """Load a model saved by :func:`save_pretrained`, from its folder or a training run folder (``runs/X``)."""
    from mmfuse.checkpoint import load_pretrained

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
