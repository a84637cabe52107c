"""The registry: one pluggy plugin manager for project ``mmfuse``, for every kind of entry.

Every entry (encoder, fusion block, head, loss, model architecture, preset, data set, training
task) is a *name → factory* entry contributed by a plugin through one hook per kind. mmfuse's
own entries come from built-in plugin modules registered through the very same hooks, so
third-party code and the library share one path. A name is unique across all kinds, so
``radm-tiny`` or ``jmasa`` always means one thing.

Plugins reach the manager in three ways:

* built-ins, listed in :data:`BUILTIN_PLUGINS` (registered when the registry is first used);
* the ``mmfuse`` entry-point group of installed distributions, loaded lazily on the first
  lookup (a plugin that fails to import is reported with a warning and skipped);
* in-process with :func:`register_plugin`.

A factory is any callable returning the component (usually an ``nn.Module`` class or a
function). Its signature *is* its config schema: :func:`mmfuse.core.config.call_with_config`
checks config keys and value types against it, so errors name the offending key.
:func:`lookup` is the one lookup-and-suggest helper every name table of mmfuse uses
(:mod:`mmfuse.core.build` builds a registered component from a spec).
"""

from __future__ import annotations

import importlib
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, TypeVar

import pluggy

from mmfuse.core.config import ConfigError
from mmfuse.core.names import did_you_mean

PROJECT = "mmfuse"
ENTRY_POINT_GROUP = "mmfuse"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: component kind → name of the hook that contributes it
KIND_HOOKS: dict[str, str] = {
    "encoder": "mmfuse_encoders",
    "fusion": "mmfuse_fusions",
    "head": "mmfuse_heads",
    "loss": "mmfuse_losses",
    "model": "mmfuse_models",
    "preset": "mmfuse_presets",
    "dataset": "mmfuse_datasets",
    "task": "mmfuse_tasks",
}
KINDS: tuple[str, ...] = tuple(KIND_HOOKS)
#: how error messages name each kind
KIND_LABELS: dict[str, str] = {kind: kind for kind in KINDS} | {"dataset": "data set"}

#: Built-in plugin modules; each defines ``@hookimpl`` functions for the kinds it contributes.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "mmfuse.encoders",
    "mmfuse.fusion",
    "mmfuse.heads",
    "mmfuse.losses",
    "mmfuse.models",
    "mmfuse.data.datasets",
    "mmfuse.tasks",
)


class MMFuseHookSpecs:
    """Hook specifications. Each hook returns a mapping ``name -> factory`` (or ``None``)."""

    @hookspec
    def mmfuse_encoders(self) -> Mapping[str, Callable[..., Any]] | None:
        """Text / image encoders: factories returning an ``nn.Module``."""

    @hookspec
    def mmfuse_fusions(self) -> Mapping[str, Callable[..., Any]] | None:
        """Fusion blocks (cross-modal interaction stacks, self-fusion encoders, ...)."""

    @hookspec
    def mmfuse_heads(self) -> Mapping[str, Callable[..., Any]] | None:
        """Prediction heads (classification, span extraction, relation, ...)."""

    @hookspec
    def mmfuse_losses(self) -> Mapping[str, Callable[..., Any]] | None:
        """Losses, including auxiliary losses such as ITC / ITM."""

    @hookspec
    def mmfuse_models(self) -> Mapping[str, Callable[..., Any]] | None:
        """Model architectures: factories taking config keyword arguments, returning a model."""

    @hookspec
    def mmfuse_presets(self) -> Mapping[str, Mapping[str, Any] | Callable[[], Mapping[str, Any]]] | None:
        """Named model configs (a dict, or a zero-argument callable returning one) with a ``model`` key."""

    @hookspec
    def mmfuse_datasets(self) -> Mapping[str, Callable[..., Any]] | None:
        """Data sets: builders ``builder(split, data_dir, **options) -> Dataset`` (see :mod:`mmfuse.data.datasets`)."""

    @hookspec
    def mmfuse_tasks(self) -> Mapping[str, Any] | None:
        """Training tasks: :class:`mmfuse.tasks.TrainTask` objects, or zero-argument callables returning one."""


class RegistryError(LookupError):
    """Base class of registry lookup / registration errors."""


class UnknownComponentError(RegistryError, KeyError, ConfigError):
    """A name that no plugin registered for that kind (also a :class:`~mmfuse.core.config.ConfigError`:
    the name usually comes from a config or the command line)."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(RegistryError):
    """Two plugins registered the same name, or one name is registered for two kinds."""


T = TypeVar("T")


def lookup(entries: Mapping[str, T], name: str, what: str, where: str | None = None) -> T:
    """``entries[name]``, or :class:`UnknownComponentError` naming ``what`` (``"model"``, ``"data set"``,
    ...), the closest known name and all known names. ``where`` prefixes the message (a config key)."""
    if not isinstance(name, str):
        raise TypeError(f"{where + ': ' if where else ''}{what} name must be a string, got "
                        f"{type(name).__name__}: {name!r}")
    if name in entries:
        return entries[name]
    known = sorted(entries)
    raise UnknownComponentError(
        f"{where + ': ' if where else ''}unknown {what} {name!r}{did_you_mean(name, known)}; "
        f"known: {', '.join(known) if known else '(none)'}"
    )


@dataclass(frozen=True)
class ComponentInfo:
    """One registry entry."""

    kind: str
    name: str
    factory: Callable[..., Any] | Mapping[str, Any]
    plugin: str

    @property
    def summary(self) -> str:
        """The preset's or task's ``description``, else the first line of the factory's docstring,
        without RST markup."""
        from mmfuse.utils.console import plain_text

        if isinstance(self.factory, Mapping):
            return plain_text(str(self.factory.get("description", "")))
        description = getattr(self.factory, "description", None)
        if isinstance(description, str):
            return plain_text(description)
        doc = getattr(self.factory, "__doc__", None) or ""
        return plain_text(doc.strip().splitlines()[0]) if doc.strip() else ""


class Registry:
    """Wraps the pluggy manager and keeps a name index per kind, rebuilt on change."""

    def __init__(self, builtins: Iterable[str] = BUILTIN_PLUGINS, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(MMFuseHookSpecs)
        self._builtins = tuple(builtins)
        self._load_entry_points = load_entry_points
        self._setup_done = False
        self._index: dict[str, dict[str, ComponentInfo]] | None = None
        #: plugin name -> the distribution (pip package) that installed it, for entry-point plugins
        self._distributions: dict[str, str] = {}
        self._lock = threading.RLock()

    # -- plugin loading -------------------------------------------------------------
    def _setup(self) -> None:
        if self._setup_done:
            return
        with self._lock:
            if self._setup_done:
                return
            for modname in self._builtins:
                if self.pm.get_plugin(modname) is None:
                    self.pm.register(importlib.import_module(modname), name=modname)
            if self._load_entry_points:
                self._load_entry_point_plugins()
            self._setup_done = True

    def _load_entry_point_plugins(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not brick mmfuse
                warnings.warn(
                    f"mmfuse: could not load plugin {ep.name!r} from entry point {ep.value!r} "
                    f"({type(exc).__name__}: {exc}); its components are unavailable",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            self.pm.register(plugin, name=ep.name)
            dist = getattr(ep, "dist", None)
            if dist is not None and getattr(dist, "name", None):
                self._distributions[ep.name] = dist.name

    def distribution_of(self, plugin: str) -> str | None:
        """The distribution (pip package name) that supplied the entry-point plugin ``plugin``, if known."""
        self._setup()
        return self._distributions.get(plugin)

    def register_plugin(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` (a module or object with ``@hookimpl`` methods) in-process.

        Returns the plugin name. Raises :class:`DuplicateComponentError` (and leaves the
        registry unchanged) when it contributes a name another plugin already has.
        """
        self._setup()
        with self._lock:
            plugin_name = self.pm.register(plugin, name=name)
            if plugin_name is None:
                raise RegistryError(f"plugin {name!r} is blocked and cannot be registered")
            self._index = None
            try:
                self._build_index()
            except DuplicateComponentError:
                self.pm.unregister(plugin)
                self._index = None
                raise
            return plugin_name

    def unregister_plugin(self, plugin_or_name: object | str) -> None:
        """Remove a plugin registered with :meth:`register_plugin` (by object or name)."""
        with self._lock:
            if isinstance(plugin_or_name, str):
                self.pm.unregister(name=plugin_or_name)
            else:
                self.pm.unregister(plugin_or_name)
            self._index = None

    # -- index ------------------------------------------------------------------------
    def _build_index(self) -> dict[str, dict[str, ComponentInfo]]:
        if self._index is not None:
            return self._index
        index: dict[str, dict[str, ComponentInfo]] = {kind: {} for kind in KINDS}
        owners: dict[str, ComponentInfo] = {}  # name -> entry, across kinds
        for kind, hook_name in KIND_HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                contributed = impl.function()
                if not contributed:
                    continue
                if not isinstance(contributed, Mapping):
                    raise RegistryError(
                        f"plugin {impl.plugin_name!r}: hook {hook_name} must return a mapping "
                        f"name -> factory, got {type(contributed).__name__}"
                    )
                for name, factory in contributed.items():
                    if not isinstance(name, str) or not name:
                        raise RegistryError(
                            f"plugin {impl.plugin_name!r}: {kind} names must be non-empty strings, got {name!r}"
                        )
                    if name in index[kind]:
                        other = index[kind][name].plugin
                        raise DuplicateComponentError(
                            f"{kind} {name!r} is registered by two plugins: {other!r} and "
                            f"{impl.plugin_name!r}; uninstall or rename one of them"
                        )
                    other_kind = owners.get(name)
                    if other_kind is not None:
                        raise DuplicateComponentError(
                            f"{name!r} is registered as a {other_kind.kind} by {other_kind.plugin!r} and as a "
                            f"{kind} by {impl.plugin_name!r}; names must be unique across kinds, rename one"
                        )
                    index[kind][name] = owners[name] = ComponentInfo(kind, name, factory, impl.plugin_name)
        self._index = index
        return index

    def _checked_kind(self, kind: str) -> str:
        if kind not in KIND_HOOKS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        return kind

    # -- lookups ----------------------------------------------------------------------
    def get(self, kind: str, name: str) -> ComponentInfo:
        """Return the entry ``name`` of ``kind``; unknown names list the known ones."""
        self._checked_kind(kind)
        self._setup()
        with self._lock:
            entries = self._build_index()[kind]
        return lookup(entries, name, KIND_LABELS[kind])

    def names(self, kind: str) -> list[str]:
        self._checked_kind(kind)
        self._setup()
        with self._lock:
            return sorted(self._build_index()[kind])

    def entries(self, kind: str | None = None) -> list[ComponentInfo]:
        """All entries (of one kind, or of every kind), sorted by kind then name."""
        kinds = [self._checked_kind(kind)] if kind is not None else list(KINDS)
        self._setup()
        with self._lock:
            index = self._build_index()
        return [index[k][n] for k in kinds for n in sorted(index[k])]

    def plugins(self) -> list[str]:
        self._setup()
        return sorted(name for name, _ in self.pm.list_name_plugin())


_REGISTRY: Registry | None = None
_REGISTRY_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry (created on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        with _REGISTRY_LOCK:
            if _REGISTRY is None:
                _REGISTRY = Registry()
    return _REGISTRY


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object or module in-process; see :meth:`Registry.register_plugin`."""
    return get_registry().register_plugin(plugin, name=name)


def unregister_plugin(plugin_or_name: object | str) -> None:
    get_registry().unregister_plugin(plugin_or_name)


def get_component(kind: str, name: str) -> ComponentInfo:
    return get_registry().get(kind, name)


def list_components(kind: str | None = None) -> dict[str, list[str]] | list[str]:
    """Registered component names.

    ``list_components()`` returns ``{kind: [names...]}`` for every kind;
    ``list_components("model")`` returns the sorted names of that kind.
    """
    reg = get_registry()
    if kind is not None:
        return reg.names(kind)
    return {k: reg.names(k) for k in KINDS}
