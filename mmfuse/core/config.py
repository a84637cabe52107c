"""Model configs: loading (JSON / YAML), merging overrides, and validation against factories.

A config is a plain, JSON-serialisable dict. The schema of each component is the signature
of its factory: :func:`call_with_config` checks a config against it and reports the exact
key path (``fusion.n_heads``) of any missing, unknown or wrongly typed value.
"""

from __future__ import annotations

import collections.abc as cabc
import copy
import inspect
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union

import yaml

from mmfuse.core.names import did_you_mean


class ConfigError(ValueError):
    """A config that does not fit its component; the message names the key path."""


CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict."""
    p = Path(path)
    if p.suffix.lower() not in CONFIG_SUFFIXES:
        raise ConfigError(f"config file {str(p)!r}: expected a {', '.join(CONFIG_SUFFIXES)} file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    from mmfuse.utils.io import read_text_file

    try:
        text = read_text_file(p, "config file")
    except ValueError as exc:  # not UTF-8: names the line
        raise ConfigError(str(exc)) from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid {p.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r}: the top level must be a mapping, got {type(data).__name__}")
    return data


def save_config(config: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a config as JSON or YAML (by suffix), atomically."""
    from mmfuse.utils.io import atomic_write_text

    p = Path(path)
    if p.suffix.lower() == ".json":
        text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    elif p.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(dict(config), sort_keys=False)
    else:
        raise ConfigError(f"config file {str(p)!r}: expected a {', '.join(CONFIG_SUFFIXES)} file")
    atomic_write_text(p, text)


def _swaps_component(base: Mapping[str, Any], override: Mapping[str, Any]) -> bool:
    """True when ``override`` names another component than the spec ``base`` it replaces."""
    return "name" in override and "name" in base and override["name"] != base["name"]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``overrides``; nested dicts merge, other values replace.

    Keys with dots address nested entries: ``{"fusion.mode": "none"}`` equals
    ``{"fusion": {"mode": "none"}}``.

    A component spec replaced by one with a different ``name`` is not merged: the old spec's
    options belong to the old component, so ``{"fusion": {"name": "film"}}`` swaps the fusion
    block of a preset instead of mixing its options into the new block's config.
    """
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"override keys must be strings, got {key!r}")
        parts = key.split(".")
        target = out
        for depth, part in enumerate(parts[:-1]):
            node = target.get(part)
            if node is None:
                node = target[part] = {}
            elif not isinstance(node, dict):
                raise ConfigError(
                    f"override {key!r}: {'.'.join(parts[: depth + 1])!r} is a "
                    f"{type(node).__name__}, not a mapping"
                )
            target = node
        last = parts[-1]
        current = target.get(last)
        if isinstance(value, Mapping) and isinstance(current, dict) and not _swaps_component(current, value):
            target[last] = deep_merge(current, value)
        else:
            target[last] = copy.deepcopy(value)
    return out


def parse_set_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse CLI ``--set key.path=value`` items.

    Values are read as JSON when possible (``1e-3``, ``[1, 2]``, ``true``), else as YAML
    (``none`` stays the string ``"none"``; ``null`` is None).
    """
    result: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. fusion.mode=none")
        key, raw = item.split("=", 1)
        try:
            result[key.strip()] = json.loads(raw)
            continue
        except json.JSONDecodeError:
            pass
        try:
            result[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot parse value: {exc}") from exc
    return result


# ---------------------------------------------------------------------------------------
# validation against a factory signature
# ---------------------------------------------------------------------------------------
def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{args}]" if args else base
    return getattr(tp, "__name__", str(tp))


def check_type(value: Any, tp: Any, path: str) -> None:
    """Raise :class:`ConfigError` naming ``path`` when ``value`` does not match annotation ``tp``.

    Understands the annotation forms configs use: builtins, ``X | None``, ``Literal``,
    ``list[T]`` / ``Sequence[T]``, ``tuple[T, ...]``, ``dict[K, V]`` / ``Mapping``, ``Any``.
    Anything else (tensors, modules, callables) is accepted unchecked.
    """
    if tp is Any or tp is inspect.Parameter.empty:
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for alt in args:
            try:
                check_type(value, alt, path)
                return
            except ConfigError as exc:
                errors.append(exc)
        deeper = [e for e in errors if not str(e).startswith(f"{path}:")]
        if deeper:  # the value had the right container type; report the bad item inside it
            raise deeper[0]
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return
    if tp is type(None) or tp is None:
        if value is not None:
            raise ConfigError(f"{path}: expected None, got {_describe(value)}")
        return
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool, got {_describe(value)}")
        return
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {_describe(value)}")
        return
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, got {_describe(value)}")
        return
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {_describe(value)}")
        return
    container = origin or tp
    if container in (list, cabc.Sequence, cabc.MutableSequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
        if args:
            for i, item in enumerate(value):
                check_type(item, args[0], f"{path}[{i}]")
        return
    if container is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
        if args and len(args) == 2 and args[1] is Ellipsis:
            for i, item in enumerate(value):
                check_type(item, args[0], f"{path}[{i}]")
        elif args:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            for i, (item, sub) in enumerate(zip(value, args)):
                check_type(item, sub, f"{path}[{i}]")
        return
    if container in (dict, cabc.Mapping, cabc.MutableMapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        if len(args) == 2:
            for k, v in value.items():
                check_type(k, args[0], f"{path}.<key {k!r}>")
                check_type(v, args[1], f"{path}.{k}")
        return
    # other annotations (tensors, modules, callables, paths, ...) are not checked


def _signature_target(factory: Callable[..., Any]) -> Callable[..., Any]:
    return factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]


def factory_parameters(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(parameters by name, resolved type hints, accepts **kwargs) of a factory."""
    sig = inspect.signature(factory)
    params = {
        n: p
        for n, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    try:
        hints = typing.get_type_hints(_signature_target(factory))
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {n: p.annotation for n, p in params.items()}
    return params, hints, var_kw


def validate_config(
    factory: Callable[..., Any],
    config: Mapping[str, Any],
    where: str,
    reserved: tuple[str, ...] = (),
    provided: tuple[str, ...] = (),
) -> None:
    """Check ``config`` against ``factory``'s signature; raise :class:`ConfigError` naming the key.

    ``reserved`` keys are skipped (e.g. ``name``); ``provided`` are arguments the caller
    passes itself (e.g. ``d_model`` injected by the parent model), so they count as present
    and may not also appear in ``config``.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: expected a mapping of options, got {_describe(config)}")
    params, hints, var_kw = factory_parameters(factory)
    prefix = f"{where}." if where else ""
    for key in config:
        if key in reserved:
            continue
        if key in provided:
            raise ConfigError(f"{prefix}{key}: is set by the enclosing component and cannot be configured here")
        if key not in params and not var_kw:
            configurable = sorted(set(params) - set(provided))  # injected arguments are not options
            hint = did_you_mean(str(key), configurable, cutoff=0.6)
            raise ConfigError(
                f"{prefix}{key}: unknown key{hint}; valid keys are {', '.join(configurable) or '(none)'}"
            )
    for name, param in params.items():
        if name in config:
            check_type(config[name], hints.get(name, param.annotation), f"{prefix}{name}")
        elif param.default is inspect.Parameter.empty and name not in provided:
            raise ConfigError(f"{prefix}{name}: missing required key")


def call_with_config(
    factory: Callable[..., Any], config: Mapping[str, Any], where: str, **extra: Any
) -> Any:
    """Validate ``config`` against ``factory`` and call it with ``config`` plus ``extra``."""
    validate_config(factory, config, where, provided=tuple(extra))
    return factory(**dict(config), **extra)
