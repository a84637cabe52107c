"""Output dataclasses shared by mmfuse models (what ``model(batch)`` returns).

Architecture-specific outputs live with their model (e.g. :class:`mmfuse.models.jml.outputs.JMLOutput`).

Outputs behave like Hugging Face's ``transformers.utils.ModelOutput``: attribute access
(``out.logits``), key access over the fields that are set (``out["logits"]``, ``"loss" in out``,
``keys()`` / ``values()`` / ``items()``), integer indexing and :meth:`ModelOutput.to_tuple`
skip ``None`` fields. Each output class is registered as a pytree node (like HF's), so
``torch.compile`` / ``torch.export`` / DDP see its tensors.

They do not subclass HF's class: that one is a ``dict`` (code that treats dicts as batches,
e.g. moving them to a device or collating, would take an output for a batch), it requires
every field but the first to default to ``None`` (``logits`` / ``losses`` default to empty
dicts here, which the trainer and the losses iterate), and its ``__post_init__`` reinterprets
the first field as a key/value iterable when the others are unset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import torch.utils._pytree as pytree
from torch import Tensor

from mmfuse.core.features import Features


def _flatten(output: "ModelOutput") -> tuple[list[Any], list[str]]:
    names = [f.name for f in dataclasses.fields(output)]
    return [getattr(output, name) for name in names], names


def _unflatten(values: Any, names: Any, cls: type) -> "ModelOutput":
    return cls(**dict(zip(names, values)))


def _flatten_with_keys(output: "ModelOutput") -> tuple[list[tuple[Any, Any]], list[str]]:
    values, names = _flatten(output)
    return [(pytree.GetAttrKey(name), value) for name, value in zip(names, values)], names


def _register(cls: type) -> None:
    if cls in pytree.SUPPORTED_NODES:
        return
    pytree.register_pytree_node(
        cls, _flatten, lambda values, names: _unflatten(values, names, cls),
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}", flatten_with_keys_fn=_flatten_with_keys,
    )


_register(Features)  # the unimodal features outputs carry are a pytree of three tensors


class OutputAccess:
    """Key / index access over the fields that are not None, as HF's ``ModelOutput`` has."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # registered once the dataclass decorator has run (fields are needed only at flatten time)
        _register(cls)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in declaration order (HF's ``to_tuple``)."""
        return tuple(self.values())

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
                raise KeyError(f"{key!r} (set fields: {self.keys()}; all fields: {names})")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def __iter__(self) -> Iterator[str]:
        """Iterates over the set field names, like a dict (HF outputs do the same)."""
        return iter(self.keys())


@dataclass
class ModelOutput(OutputAccess):
    """Fields every mmfuse model output has.

    Attributes:
        loss: the total (weighted) training loss, or None when the batch had no labels.
        losses: named loss components for logging (e.g. ``{"sentiment": ..., "itc": ...}``).
        text_features / image_features: unimodal features, reused by auxiliary losses.
    """

    loss: Optional[Tensor] = None
    losses: dict[str, Tensor] = field(default_factory=dict)
    text_features: Optional[Features] = None
    image_features: Optional[Features] = None


@dataclass
class ClassificationOutput(ModelOutput):
    """Output of multimodal (multi-task) classifiers such as RADM.

    Attributes:
        logits: task name → ``[B, n_classes]``.
        text_pooled / image_pooled: ``[B, d]`` pooled vectors of each modality after fusion.
        fused: ``[B, d_fused]`` the concatenated representation the heads read.
        attentions: score stream (``"tt"``, ``"ii"``, ``"ti"``, ``"it"``, ...) → one
            ``[B, H, Lq, Lk]`` tensor per layer; only when requested.
    """

    logits: dict[str, Tensor] = field(default_factory=dict)
    text_pooled: Optional[Tensor] = None
    image_pooled: Optional[Tensor] = None
    fused: Optional[Tensor] = None
    attentions: Optional[dict[str, list[Tensor]]] = None
