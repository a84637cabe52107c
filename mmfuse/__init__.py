"""mmfuse: multimodal (text + image) fusion models for sentiment analysis.

Quick start::

    import mmfuse
    mmfuse.list_components()              # {"encoder": [...], "fusion": [...], ...}
    model = mmfuse.build_model("radm-tiny")

Components, models, presets, data sets and tasks register through pluggy (see
:mod:`mmfuse.core.registry`); third-party packages add theirs through the ``mmfuse`` entry-point
group or :func:`register_plugin`. The package layers are described in docs/architecture.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from mmfuse.core.config import ConfigError
from mmfuse.core.registry import (
    ComponentSpec,
    DuplicateComponentError,
    RegistryError,
    UnknownComponentError,
    build_component,
    get_component,
    get_registry,
    hookimpl,
    list_components,
    register_plugin,
    unregister_plugin,
)
from mmfuse.models.builder import build_model, resolve_model_config

__all__ = [
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
