"""``build_component``: a spec (``"name"`` or ``{"name": ..., **options}``) → the registered component.

The registered model factories build their parts with it (``mmfuse.models.*.builder``), the
auxiliary losses theirs, and plugins may use it for nested components. Every component it builds
is recorded for the model being built and stamped with its config key path
(:mod:`mmfuse.core.provenance`), so a saved model can name the plugins it needs and
:mod:`mmfuse.core.portable` can find each module's spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmfuse.core.config import ConfigError, call_with_config
from mmfuse.core.provenance import record_component, stamp_component
from mmfuse.core.registry import UnknownComponentError, get_registry

#: a component in a config: its registered name, or a mapping with ``name`` and its options
ComponentSpec = str | Mapping[str, Any]


def build_component(kind: str, spec: ComponentSpec, where: str | None = None, **extra: Any) -> Any:
    """Build a registered component from ``"name"`` or ``{"name": ..., **options}``.

    ``extra`` are arguments the caller supplies itself (e.g. ``d_model``); they may not also
    appear in ``spec``. ``where`` is the key path used in error messages.
    """
    where = where or kind
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError(f"{where}.name: missing required key (the {kind} to build)")
        name = spec["name"]
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected str, got {type(name).__name__}")
        options = {k: v for k, v in spec.items() if k != "name"}
    else:
        raise ConfigError(f"{where}: expected a {kind} name or a mapping with 'name', got {type(spec).__name__}")
    try:
        info = get_registry().get(kind, name)
    except UnknownComponentError as err:
        raise UnknownComponentError(f"{where}.name: {err}") from None
    record_component(info)
    try:
        component = call_with_config(info.factory, options, where=where, **extra)
    except ConfigError as err:
        raise ConfigError(_under(where, str(err))) from err.__cause__
    stamp_component(component, where)
    return component


def _under(where: str, message: str) -> str:
    """``message`` of a component's own check, prefixed with the component's key path: ``n_heads: ...``
    raised inside the fusion block reads ``fusion.n_heads: ...`` (unchanged when it already names it)."""
    if not where or message.startswith((f"{where}.", f"{where}:", f"{where}[")):
        return message
    head, sep, _ = message.partition(": ")
    if sep and head and " " not in head:  # "key.path: ..."
        return f"{where}.{message}"
    return f"{where}: {message}"
