"""Where a built model's components come from, so a saved model can say what it needs.

:func:`mmfuse.build_model` notes every registry entry it builds (kind, name, supplying plugin)
and :func:`mmfuse.build_component` stamps each built module with its config key path
(``_mmfuse_where``, e.g. ``"text_encoder"``), which :mod:`mmfuse.core.portable` uses to find a
module's spec in the model config. ``save_pretrained`` writes the components of third-party
plugins, with the pip distribution that installed them, under the ``"_mmfuse"`` key of
``config.json``; loading a model whose plugin is not installed then names that plugin instead
of failing with an unknown-name error.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from mmfuse.core.registry import BUILTIN_PLUGINS, ComponentInfo, RegistryError, UnknownComponentError, get_registry

#: config.json key holding what the saving install knew (never passed to a factory)
METADATA_KEY = "_mmfuse"
#: attribute of a built component: its key path in the enclosing model's config
WHERE_ATTRIBUTE = "_mmfuse_where"
#: attribute of a built model: the registry entries it was built from
COMPONENTS_ATTRIBUTE = "mmfuse_components"

_COLLECTOR: contextvars.ContextVar[list[dict[str, str]] | None] = contextvars.ContextVar("mmfuse_components",
                                                                                         default=None)


class MissingPluginError(UnknownComponentError):
    """A saved model needs a component whose plugin is not installed."""


def record_component(info: ComponentInfo) -> None:
    """Note a registry entry used by the model being built (no-op outside :func:`collecting`)."""
    collected = _COLLECTOR.get()
    if collected is None:
        return
    entry = {"kind": info.kind, "name": info.name, "plugin": info.plugin}
    if entry not in collected:
        collected.append(entry)


@contextlib.contextmanager
def collecting() -> Iterator[list[dict[str, str]]]:
    """Collect the entries recorded inside the block (also into an enclosing collector)."""
    parent = _COLLECTOR.get()
    collected: list[dict[str, str]] = []
    token = _COLLECTOR.set(collected)
    try:
        yield collected
    finally:
        _COLLECTOR.reset(token)
        if parent is not None:
            parent.extend(e for e in collected if e not in parent)


def stamp_component(component: Any, where: str) -> None:
    """Remember ``where`` (the config key path) on a built module."""
    try:
        setattr(component, WHERE_ATTRIBUTE, where)
    except (AttributeError, TypeError):  # pragma: no cover - objects that refuse attributes
        pass


def saved_metadata(model: Any) -> dict[str, Any]:
    """The ``"_mmfuse"`` entry of a saved config: mmfuse's version and the third-party components."""
    from mmfuse.core import __version__

    registry = get_registry()
    plugins = []
    for entry in getattr(model, COMPONENTS_ATTRIBUTE, None) or []:
        if entry["plugin"] in BUILTIN_PLUGINS:
            continue
        plugins.append({**entry, "distribution": registry.distribution_of(entry["plugin"])})
    return {"version": __version__, "plugins": plugins}


def check_plugins_available(metadata: Any, source: str) -> None:
    """Raise :class:`MissingPluginError` naming the plugin (and pip package) of every component of a
    saved model that the registry does not know."""
    if not isinstance(metadata, dict):
        return
    registry = get_registry()
    missing = []
    for entry in metadata.get("plugins") or []:
        if not isinstance(entry, dict) or not {"kind", "name", "plugin"} <= set(entry):
            continue
        try:
            registry.get(entry["kind"], entry["name"])
        except (RegistryError, ValueError, TypeError):
            missing.append(entry)
    if not missing:
        return
    parts = []
    for entry in missing:
        dist = entry.get("distribution")
        supplier = f"plugin {entry['plugin']!r}" + (f" (pip package {dist!r})" if dist else "")
        parts.append(f"{entry['kind']} {entry['name']!r} from {supplier}")
    packages = sorted({e.get("distribution") or e["plugin"] for e in missing})
    raise MissingPluginError(
        f"{source}: needs {'; '.join(parts)}, which is not installed; install {', '.join(packages)} "
        "(its `mmfuse` entry point registers the component) and load again"
    )
