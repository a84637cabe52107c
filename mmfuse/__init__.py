"""mmfuse: multimodal (text + image) fusion models for sentiment analysis.

Quick start::

    import mmfuse
    mmfuse.list_components()              # {"encoder": [...], "fusion": [...], ...}
    model = mmfuse.build_model("radm-tiny")

``import mmfuse`` also completes the fused operator ``torch.ops.mmfuse.gated_residual_attention``
(kernels, fake implementation, autograd; see :mod:`mmfuse.ops`), as torchvision does for its ops.

Components register through pluggy (see :mod:`mmfuse.registry`); third-party packages add
theirs through the ``mmfuse`` entry-point group or :func:`register_plugin`.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
