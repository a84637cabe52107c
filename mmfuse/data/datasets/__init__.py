"""Data sets by name: ``build_dataset("mvsa-single", "train", data_dir="...", seed=1)``.

Data sets are a registry kind (``dataset``) like encoders or models: this package is the
built-in plugin contributing mmfuse's own (its :func:`mmfuse_datasets` hook), and a third-party
plugin adds more through the same hook (see docs/plugins.md). A builder is a function
``builder(split, data_dir, **options) -> Dataset``; its keyword-only parameters are its options,
validated against their annotations by :func:`mmfuse.core.config.call_with_config` (unknown or
wrongly typed options fail naming the key). This is what ``mmfuse train --dataset NAME
--data-dir PATH`` uses.

A new data set goes into a module of its own here (a reader returning
:class:`~mmfuse.data.datasets.base.Record` rows and a ``build_*`` function), listed in the hook below.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from mmfuse.core.config import call_with_config
from mmfuse.core.registry import get_registry, hookimpl

DatasetBuilder = Callable[..., Any]


@hookimpl
def mmfuse_datasets() -> dict[str, DatasetBuilder]:
    from mmfuse.data.datasets.msed import build_msed
    from mmfuse.data.datasets.mvsa import build_mvsa_json, build_mvsa_multiple, build_mvsa_single
    from mmfuse.data.datasets.synthetic import build_synthetic
    from mmfuse.data.datasets.trc import build_trc
    from mmfuse.data.datasets.twitter import build_twitter2015, build_twitter2017

    return {
        "synthetic": build_synthetic,
        "mvsa-single": build_mvsa_single,
        "mvsa-multiple": build_mvsa_multiple,
        "mvsa-json": build_mvsa_json,
        "msed": build_msed,
        "trc": build_trc,
        "twitter2015": build_twitter2015,
        "twitter2017": build_twitter2017,
    }


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset` (built-in and from plugins), sorted."""
    return get_registry().names("dataset")


def build_dataset(name: str, split: str, data_dir: str | os.PathLike[str] | None = None, **options: object) -> Any:
    """Build split ``split`` of the data set ``name`` from ``data_dir`` with builder ``options``.

    Raises :class:`~mmfuse.core.registry.UnknownComponentError` (a
    :class:`~mmfuse.core.config.ConfigError`) for an unknown name, with a close-match hint, and
    :class:`~mmfuse.core.config.ConfigError` for an unknown / wrongly typed option (naming it);
    the builders raise ``ValueError`` / ``FileNotFoundError`` naming the file for bad data.
    """
    builder = get_registry().get("dataset", name).factory
    dataset = call_with_config(
        builder, options, where=name, split=split, data_dir=None if data_dir is None else os.fspath(data_dir)
    )
    record = {"name": name, "data_dir": None if data_dir is None else os.fspath(data_dir), "options": dict(options)}
    try:
        json.dumps(record)
        dataset.build_spec = record  # the Trainer records it in task.json, so `mmfuse eval RUN` finds the data
    except (TypeError, ValueError, AttributeError):  # options that are not JSON, or a dataset refusing attributes
        pass
    return dataset
