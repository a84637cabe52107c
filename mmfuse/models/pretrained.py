"""``model.save_pretrained(dir)`` / ``Model.from_pretrained(dir)``: the Hugging Face-style model API.

Why not ``huggingface_hub.PyTorchModelHubMixin``: its ``from_pretrained`` downloads from the Hub
when the argument is not an existing folder (mmfuse never touches the network), it rebuilds a
model as ``cls(**config)`` from the ``__init__`` arguments it captured, while an mmfuse config
names its architecture through the registry (``{"model": "radm", ...}``, presets, plugin
components and auxiliary losses are resolved by :func:`mmfuse.build_model`), and its config
holds no portable rewrite of outside files (tokenizers, relation checkpoints). The mixin below
offers the same two methods on mmfuse's own save / load (:mod:`mmfuse.models.checkpoint`); the folder
layout (``config.json`` + ``model.safetensors``) is the one the Hub mixin writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T", bound="PretrainedMixin")


class PretrainedMixin:
    """Adds :meth:`save_pretrained` and :meth:`from_pretrained` to a model built by :func:`mmfuse.build_model`.

    Plugin models get the same methods by inheriting this class; any model built by
    ``build_model`` also works with the functions :func:`mmfuse.save_pretrained` /
    :func:`mmfuse.from_pretrained`.
    """

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """Write the model folder (weights, portable config, tokenizer files); returns its path."""
        from mmfuse.models.checkpoint import save_pretrained

        return save_pretrained(self, save_directory)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls: type[T], pretrained_model_path: str | os.PathLike[str],
                        map_location: str | torch.device = "cpu", **overrides: Any) -> T:
        """Load a model folder (or a training run folder) saved from this architecture."""
        from mmfuse.models.checkpoint import load_pretrained

        model = load_pretrained(pretrained_model_path, map_location=map_location, **overrides)
        if cls is not PretrainedMixin and not isinstance(model, cls):
            raise TypeError(f"{cls.__name__}.from_pretrained: {str(pretrained_model_path)!r} holds a "
                            f"{type(model).__name__} model; use mmfuse.from_pretrained to load any architecture")
        return model  # type: ignore[return-value]
