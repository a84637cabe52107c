"""Data sets by name: ``build_dataset("mvsa-single", "train", data_dir="...", seed=1)``.

A builder is a function ``builder(split, data_dir, **options) -> ClassificationDataset``; its
keyword-only parameters are its options, validated against their annotations by
:func:`mmfuse.config.call_with_config` (unknown or wrongly typed options fail naming the key).
This is what ``mmfuse train --dataset NAME --data-dir PATH`` uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from mmfuse.config import ConfigError, call_with_config
from mmfuse.data.base import ClassificationDataset
from mmfuse.data.msed import build_msed
from mmfuse.data.mvsa import build_mvsa_json, build_mvsa_multiple, build_mvsa_single
from mmfuse.data.synthetic import DEFAULT_IMAGE_SIZE, DEFAULT_LABEL_NOISE, DEFAULT_SIZES, SyntheticDataset
from mmfuse.data.trc import build_trc
from mmfuse.data.twitter import build_twitter2015, build_twitter2017
from mmfuse.registry import suggest

DatasetBuilder = Callable[..., ClassificationDataset]


def build_synthetic(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    train_size: int = DEFAULT_SIZES["train"],
    dev_size: int = DEFAULT_SIZES["dev"],
    test_size: int = DEFAULT_SIZES["test"],
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    label_noise: float = DEFAULT_LABEL_NOISE,
    tasks: list[str] | None = None,
) -> SyntheticDataset:
    """One split of the embedded synthetic set (no files; ``data_dir`` must not be given)."""
    if data_dir is not None:
        raise ValueError(
            f"synthetic: the data set is generated, data_dir must not be given (got {str(data_dir)!r})"
        )
    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    if split not in sizes:
        raise ValueError(f"synthetic: split: expected 'train', 'dev' or 'test', got {split!r}")
    return SyntheticDataset(
        split,
        size=sizes[split],
        seed=seed,
        image_size=image_size,
        label_noise=label_noise,
        tasks=["sentiment"] if tasks is None else tasks,
    )


#: Registered data sets; :func:`register_dataset` adds more.
DATASETS: dict[str, DatasetBuilder] = {
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
    """Names accepted by :func:`build_dataset`, sorted."""
    return sorted(DATASETS)


def register_dataset(name: str, builder: DatasetBuilder, *, replace: bool = False) -> None:
    """Add ``builder`` under ``name`` (``replace=True`` to overwrite an existing entry)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if name in DATASETS and not replace and DATASETS[name] is not builder:
        raise ValueError(f"data set {name!r} is already registered (pass replace=True to overwrite it)")
    DATASETS[name] = builder


def build_dataset(
    name: str, split: str, data_dir: str | os.PathLike[str] | None = None, **options: object
) -> ClassificationDataset:
    """Build split ``split`` of the data set ``name`` from ``data_dir`` with builder ``options``.

    Raises :class:`~mmfuse.config.ConfigError` for an unknown name (with a close-match hint) or
    an unknown / wrongly typed option (naming it); the builders raise ``ValueError`` /
    ``FileNotFoundError`` naming the file for bad data.
    """
    builder = DATASETS.get(name)
    if builder is None:
        close = suggest(str(name), DATASETS)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(f"dataset: unknown data set {name!r}{hint}; known: {', '.join(list_datasets())}")
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
