"""What every mmfuse classification data set shares: raw samples, task/label names, bad-image policy.

A data set yields **raw samples**, one dict per item::

    {"id": str, "text": str, "image": PIL.Image.Image | None, "labels": {task: int}}

Tensors are made later, per batch, by :class:`mmfuse.data.collators.classification.ClassificationCollator` with
the model's processor. ``image`` is ``None`` only for data sets used without images (TRC without
a user image folder).

Bad images (``on_bad_image``):

* ``"error"`` (default): images are loaded lazily; a missing or corrupt file raises
  :class:`~mmfuse.data.images.BadImageError` naming the file the first time it is read.
* ``"skip"``: every image is checked **once, when the data set is built** (decoded at reduced
  scale, in a thread pool), bad items are removed, one warning gives the count and the first
  file names, and :attr:`ClassificationDataset.skipped` keeps the full list (``summary()`` prints
  it, e.g. at the end of training). Validating up front was chosen over "return ``None`` from
  ``__getitem__`` and drop it in the collator" because the count is then exact and known before
  training starts, identical in every DataLoader worker and every epoch, ``len(dataset)`` is the
  number of samples actually used, and no batch comes out smaller than asked. As a last line of
  defence (a file that breaks *after* the check), ``__getitem__`` in skip mode returns ``None``
  with a warning and the collator drops ``None`` items, so even then an epoch never crashes.
"""

from __future__ import annotations

import abc
import collections
import csv
import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from torch.utils.data import Dataset

from mmfuse.data.images import BadImageError, check_image, load_image

OnBadImage = Literal["error", "skip"]
ON_BAD_IMAGE: tuple[str, ...] = ("error", "skip")

T = TypeVar("T")

#: A raw sample as produced by every data set (see module docstring).
Sample = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SkippedItem:
    """One item left out because of its image."""

    id: str
    path: Path
    reason: str


@dataclasses.dataclass(frozen=True)
class Record:
    """A parsed, labelled item whose image (if any) is still on disk."""

    id: str
    text: str
    labels: Mapping[str, int]
    image_path: Path | None = None


@dataclasses.dataclass
class ParseReport:
    """What a reader saw in a source file: rows read, rows kept, rows dropped (by reason),
    rows kept but worth knowing about (``flagged``, by reason) and a few example ids per reason."""

    source: str
    rows: int = 0
    kept: int = 0
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    flagged: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def drop(self, reason: str, example: str) -> None:
        self.dropped[reason] += 1
        self._example(reason, example)

    def flag(self, reason: str, example: str) -> None:
        self.flagged[reason] += 1
        self._example(reason, example)

    def _example(self, reason: str, example: str) -> None:
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 5:
            shown.append(example)

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.rows} rows, {self.kept} kept"]
        parts += [f"dropped {n} ({reason})" for reason, n in sorted(self.dropped.items())]
        parts += [f"{n} {reason}" for reason, n in sorted(self.flagged.items())]
        return "; ".join(parts)


class CheckedCsvReader:
    """``csv.reader`` whose errors (a field over the csv module's size limit, a NUL byte, an
    unexpected end in strict mode) name the file and the line instead of a bare ``_csv.Error``."""

    def __init__(self, reader: Any, path: str | os.PathLike[str]) -> None:
        self._reader = reader
        self.path = path

    @property
    def line_num(self) -> int:
        return self._reader.line_num

    def __iter__(self) -> CheckedCsvReader:
        return self

    def __next__(self) -> list[str]:
        try:
            return next(self._reader)
        except csv.Error as exc:
            raise ValueError(f"{self.path}: line {self._reader.line_num + 1}: malformed CSV ({exc}; "
                             "an unbalanced quote?)") from None


def check_on_bad_image(value: str) -> OnBadImage:
    if value not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image: expected one of {', '.join(map(repr, ON_BAD_IMAGE))}, got {value!r}")
    return value  # type: ignore[return-value]


def check_tasks(tasks: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Validate a ``{task: class names}`` mapping (non-empty, ≥ 2 distinct names per task)."""
    if not tasks:
        raise ValueError("tasks: expected at least one task")
    out: dict[str, tuple[str, ...]] = {}
    for task, names in tasks.items():
        names = tuple(names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"tasks[{task!r}]: expected at least 2 distinct class names, got {names!r}")
        out[task] = names
    return out


def select_tasks(
    requested: Sequence[str] | None, available: Mapping[str, Sequence[str]], where: str
) -> dict[str, tuple[str, ...]]:
    """The ``available`` tasks named in ``requested`` (all of them when ``None``), in request order."""
    if requested is None:
        return {task: tuple(names) for task, names in available.items()}
    if isinstance(requested, str) or not requested:
        raise ValueError(f"{where}: expected a non-empty list of task names, got {requested!r}")
    unknown = [t for t in requested if t not in available]
    if unknown:
        raise ValueError(f"{where}: unknown task(s) {unknown}; this data set has {list(available)}")
    if len(set(requested)) != len(requested):
        raise ValueError(f"{where}: duplicate task names in {list(requested)}")
    return {task: tuple(available[task]) for task in requested}


def split_indices(n: int, fractions: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """Partition ``range(n)`` into named parts of the given fractions, deterministically by ``seed``.

    Part sizes are exact (cumulative rounding, so they always add up to ``n``); each part is
    returned sorted, i.e. in source-file order. Fractions must be ≥ 0 and sum to 1.
    """
    if n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    values = list(fractions.values())
    if any(f < 0 for f in values) or abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    order = np.random.default_rng(seed).permutation(n)
    out, start, cumulative = {}, 0, 0.0
    for i, (name, frac) in enumerate(fractions.items()):
        cumulative += frac
        stop = n if i == len(fractions) - 1 else round(cumulative * n)
        out[name] = np.sort(order[start:stop])
        start = stop
    return out


def train_dev_test_split(
    items: Sequence[T], seed: int, dev_fraction: float, test_fraction: float, where: str
) -> dict[str, list[T]]:
    """``{"train", "dev", "test"}`` parts of ``items`` for files without a split column.

    Checks the fractions (each in [0, 1), together < 1; errors start with ``where``) and uses
    :func:`split_indices`, so the parts are exact in size, deterministic in ``seed`` and keep file order.
    """
    for key, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{where}: {key}: expected a number in [0, 1), got {value!r}")
    if dev_fraction + test_fraction >= 1:
        raise ValueError(
            f"{where}: dev_fraction + test_fraction must be < 1, got {dev_fraction} + {test_fraction}"
        )
    fractions = {"train": 1 - dev_fraction - test_fraction, "dev": dev_fraction, "test": test_fraction}
    return {
        name: [items[i] for i in index] for name, index in split_indices(len(items), fractions, seed).items()
    }


class ClassificationDataset(Dataset, abc.ABC):
    """Base class: a sequence of raw samples with named classification tasks.

    Attributes:
        name: the data set's registry name (e.g. ``"mvsa-single"``).
        split: ``"train"`` / ``"dev"`` / ``"test"``.
        tasks: ``{task: class names in label-index order}``; ``labels[task]`` indexes it.
        skipped: items left out because of a bad image (``on_bad_image="skip"``).
    """

    name: str
    split: str
    tasks: dict[str, tuple[str, ...]]

    def __init__(self) -> None:
        self.skipped: list[SkippedItem] = []
        self.late_failures: list[SkippedItem] = []

    @property
    def num_classes(self) -> dict[str, int]:
        return {task: len(names) for task, names in self.tasks.items()}

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Sample | None: ...

    @abc.abstractmethod
    def labels_of(self, index: int) -> dict[str, int]:
        """The labels of item ``index`` without loading its image."""

    def label_counts(self, task: str) -> dict[str, int]:
        """``{class name: count}`` over the data set (images are not read)."""
        if task not in self.tasks:
            raise KeyError(f"task {task!r}: this data set has {list(self.tasks)}")
        counts = collections.Counter(self.labels_of(i)[task] for i in range(len(self)))
        return {name: counts.get(k, 0) for k, name in enumerate(self.tasks[task])}

    def summary(self) -> str:
        """One line: size, tasks and skipped images (with the first few file names)."""
        tasks = ", ".join(f"{t} ({len(n)} classes)" for t, n in self.tasks.items())
        text = f"{self.name}/{self.split}: {len(self)} samples; tasks: {tasks}"
        bad = self.skipped + self.late_failures
        if bad:
            shown = ", ".join(f"{s.path.name} ({s.reason})" for s in bad[:3])
            text += f"; skipped {len(bad)} item(s) with bad images: {shown}{', ...' if len(bad) > 3 else ''}"
        return text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.summary()}>"


class RecordDataset(ClassificationDataset):
    """A data set over parsed :class:`Record` s; images are read lazily with :func:`load_image`."""

    def __init__(
        self,
        records: Sequence[Record],
        tasks: Mapping[str, Sequence[str]],
        *,
        name: str,
        split: str,
        on_bad_image: OnBadImage = "error",
        report: ParseReport | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.split = split
        self.tasks = check_tasks(tasks)
        self.on_bad_image = check_on_bad_image(on_bad_image)
        self.report = report
        for record in records:
            self._check_labels(record)
        self.records: list[Record] = list(records)
        if self.on_bad_image == "skip":
            self._drop_bad_images()

    def _check_labels(self, record: Record) -> None:
        if set(record.labels) != set(self.tasks):
            raise ValueError(
                f"{self.name}: item {record.id!r} has labels for {sorted(record.labels)}, "
                f"expected {sorted(self.tasks)}"
            )
        for task, value in record.labels.items():
            if not isinstance(value, (int, np.integer)) or not 0 <= value < len(self.tasks[task]):
                raise ValueError(
                    f"{self.name}: item {record.id!r} label {task}={value!r} is not a class index "
                    f"in [0, {len(self.tasks[task])})"
                )

    def _drop_bad_images(self) -> None:
        paths = list(dict.fromkeys(r.image_path for r in self.records if r.image_path is not None))
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
            reasons = dict(zip(paths, pool.map(check_image, paths)))
        kept = []
        for record in self.records:
            reason = None if record.image_path is None else reasons[record.image_path]
            if reason is None:
                kept.append(record)
            else:
                self.skipped.append(SkippedItem(record.id, Path(record.image_path), reason))
        self.records = kept
        if self.skipped:
            shown = "; ".join(f"{s.path} ({s.reason})" for s in self.skipped[:3])
            warnings.warn(
                f"{self.name}/{self.split}: skipping {len(self.skipped)} item(s) with missing or "
                f"corrupt images (on_bad_image='skip'): {shown}{'; ...' if len(self.skipped) > 3 else ''}",
                stacklevel=3,
            )

    def __len__(self) -> int:
        return len(self.records)

    def labels_of(self, index: int) -> dict[str, int]:
        return dict(self.records[index].labels)

    def __getitem__(self, index: int) -> Sample | None:
        record = self.records[index]
        image = None
        if record.image_path is not None:
            try:
                image = load_image(record.image_path)
            except BadImageError as exc:
                if self.on_bad_image == "error":
                    raise BadImageError(
                        exc.path,
                        f"{exc.reason} (item {record.id!r} of {self.name}/{self.split}; "
                        "pass on_bad_image='skip' to leave such items out)",
                    ) from None
                self.late_failures.append(SkippedItem(record.id, exc.path, exc.reason))
                warnings.warn(
                    f"{self.name}/{self.split}: image of item {record.id!r} became unreadable after "
                    f"validation, dropping it from this batch: {exc}",
                    stacklevel=2,
                )
                return None
        return {"id": record.id, "text": record.text, "image": image, "labels": dict(record.labels)}
