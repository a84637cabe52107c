"""Portable model folders: a saved model needs nothing but its folder (HF's ``save_pretrained`` contract).

A model config may point outside the model: ``hf-text``'s ``path`` (a pretrained folder, whose
tokenizer the config does not hold), timm encoders' ``checkpoint_path`` (initial weights) and
JML's ``relation_checkpoint`` (a trained relation module). :func:`portable_config` rewrites such a
config when the model is saved:

* components implementing ``portable_options(options, folder, prefix) -> options`` return their
  options without outside references, writing what they need into the model folder (``hf-text``
  saves its tokenizer files to ``<folder>/<prefix>/`` and stores its HF config; timm encoders
  drop ``checkpoint_path``, whose weights are in ``model.safetensors``; JML stores its relation
  module's config);
* sub-components are found through the key path :func:`mmfuse.build_component` stamped on them
  (``text_encoder``, ``fusion``, ...), so the rewrite follows any nesting.

Relative paths in a loaded config (e.g. ``hf-text``'s ``tokenizer``) resolve against the folder
being loaded (:func:`checkpoint_root`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import nn

from mmfuse.core.provenance import METADATA_KEY, WHERE_ATTRIBUTE

_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("mmfuse_checkpoint_root", default=None)
_MISSING = object()
#: keys of a spec that select the component rather than configure it
_SELECTORS = ("name", "model")


@runtime_checkable
class PortableComponent(Protocol):
    """A component whose config may reference files outside the model folder."""

    def portable_options(self, options: dict[str, Any], folder: Path, prefix: str) -> dict[str, Any]:
        """``options`` (this component's config, without ``name``) rewritten to reference only
        ``folder``; files go under ``folder / prefix`` (``prefix``: the module's dotted path)."""


@contextlib.contextmanager
def checkpoint_root(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Resolve relative paths of configs built inside the block against ``folder``."""
    root = Path(folder).resolve()
    token = _ROOT.set(root)
    try:
        yield root
    finally:
        _ROOT.reset(token)


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against the checkpoint being loaded (else left relative to the CWD)."""
    p = Path(path).expanduser()
    root = _ROOT.get()
    return root / p if root is not None and not p.is_absolute() else p


def _component_children(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """The nearest descendants of ``module`` built from a spec (stamped with their key path)."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if getattr(child, WHERE_ATTRIBUTE, None) is not None:
            yield path, child
        else:
            yield from _component_children(child, path)


def _lookup(options: Mapping[str, Any], keys: list[str]) -> Any:
    node: Any = options
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _assign(options: dict[str, Any], keys: list[str], value: Any) -> None:
    node = options
    for key in keys[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[keys[-1]] = value


def _rewrite(module: nn.Module, options: dict[str, Any], folder: Path, prefix: str) -> dict[str, Any]:
    options = dict(options)  # never modify the caller's dict (it compares against it)
    hook = getattr(module, "portable_options", None)
    if callable(hook):
        options = hook(dict(options), folder, prefix)
    for path, child in _component_children(module, prefix):
        keys = str(getattr(child, WHERE_ATTRIBUTE)).split(".")
        spec = _lookup(options, keys)
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping):  # not a key path of this config (e.g. "aux_losses[0]")
            continue
        selectors = {k: spec[k] for k in _SELECTORS if k in spec}
        child_options = {k: v for k, v in spec.items() if k not in _SELECTORS}
        new = _rewrite(child, child_options, folder, path)
        if new != child_options:
            _assign(options, keys, {**selectors, **new})
    return options


def portable_config(model: nn.Module, config: Mapping[str, Any], folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``config`` (a :func:`mmfuse.build_model` config of ``model``) without references outside
    ``folder``; files the components need are written into ``folder``."""
    folder = Path(folder)
    top = {k: v for k, v in config.items() if k in ("model", "aux_losses", METADATA_KEY)}
    options = {k: v for k, v in config.items() if k not in top}
    new = _rewrite(model, options, folder, "")
    return {"model": config["model"], **new, **{k: v for k, v in top.items() if k != "model"}} if "model" in config \
        else {**new, **top}
