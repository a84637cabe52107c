"""Builders: turn a preset name, a config dict or a config file into components and models.

``build_model`` is the front door; model factories use :func:`build_component` for their
parts, so any registered encoder / fusion block / head can be swapped in by config.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmfuse.config import CONFIG_SUFFIXES, ConfigError, call_with_config, deep_merge, load_config
from mmfuse.provenance import (
    COMPONENTS_ATTRIBUTE,
    METADATA_KEY,
    collecting,
    record_component,
    stamp_component,
)
from mmfuse.registry import UnknownComponentError, get_registry

ComponentSpec = str | Mapping[str, Any]


def _looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(CONFIG_SUFFIXES) or os.sep in spec or (os.altsep or "\0") in spec


def resolve_model_config(spec: ComponentSpec | os.PathLike[str], **overrides: Any) -> dict[str, Any]:
    """Return the full model config for a preset name, config dict or JSON/YAML path, with overrides.

    Overrides merge into nested dicts (``fusion={"mode": "none"}``) and accept dotted keys
    (``**{"fusion.mode": "none"}``).
    """
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _looks_like_path(spec)):
        config = load_config(Path(spec))
    elif isinstance(spec, str):
        preset = get_registry().get("preset", spec).factory
        config = preset() if callable(preset) else copy.deepcopy(dict(preset))
        if not isinstance(config, Mapping):
            raise ConfigError(f"preset {spec!r} must produce a mapping, got {type(config).__name__}")
        config = dict(config)
        config.pop("description", None)
    elif isinstance(spec, Mapping):
        config = copy.deepcopy(dict(spec))
    else:
        raise TypeError(
            "build_model expects a preset name, a config dict or a path to a .json/.yaml file; "
            f"got {type(spec).__name__}"
        )
    if overrides:
        config = deep_merge(config, overrides)
    if "model" not in config:
        known = ", ".join(get_registry().names("model"))
        raise ConfigError(f"model: missing required key (the model architecture, one of: {known})")
    if not isinstance(config["model"], str):
        raise ConfigError(f"model: expected str (an architecture name), got {type(config['model']).__name__}")
    return config


def build_model(spec: ComponentSpec | os.PathLike[str], **overrides: Any):
    """Build a model from a preset name, a config dict or a JSON/YAML config path.

    >>> model = build_model("radm-tiny", fusion={"mode": "none"})  # doctest: +SKIP

    The resolved config is stored on the returned module as ``model.mmfuse_config`` so that
    checkpoints can rebuild it. An ``aux_losses`` list (e.g. ``[{"name": "itc", "weight": 0.1}]``)
    is not passed to the architecture: the losses are attached to the built model with
    :func:`mmfuse.losses.auxiliary.attach_aux_losses`.
    """
    from mmfuse.losses.auxiliary import attach_aux_losses, parse_aux_loss_specs

    config = resolve_model_config(spec, **overrides)
    config.pop(METADATA_KEY, None)  # what save_pretrained records about the saving install
    options = {k: v for k, v in config.items() if k not in ("model", "aux_losses")}
    aux_losses = config.get("aux_losses")
    if aux_losses is not None:
        parse_aux_loss_specs(aux_losses, where="aux_losses")  # fail before building the model
    with collecting() as components:
        info = get_registry().get("model", config["model"])
        record_component(info)
        model = call_with_config(info.factory, options, where="")
        if aux_losses is not None:
            attach_aux_losses(model, aux_losses, where="aux_losses")
    try:
        model.mmfuse_config = copy.deepcopy(config)
        setattr(model, COMPONENTS_ATTRIBUTE, components)
    except AttributeError:  # pragma: no cover - objects that refuse attributes
        pass
    return model


def build_component(kind: str, spec: ComponentSpec, where: str | None = None, **extra: Any):
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
