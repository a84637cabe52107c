"""MSED: multimodal sentiment, emotion and desire (Jia et al., NAACL 2022; github.com/MSEDdataset/MSED).

Layout (``data_dir`` is the repository root)::

    train/train.csv  train/images/1.jpg 2.jpg ...
    dev/dev.csv      dev/images/...
    test/test.csv    test/images/...

Each csv is a standard quoted CSV with a header ``Title,Caption,Sentiment,Emotion,Desire`` (some
versions add an ``Inference Sequence`` column, which is ignored). The image of the N-th data row
(1-based) is ``images/N.jpg``. Three tasks, with fixed class orders:

* ``sentiment``: :data:`SENTIMENT_CLASSES` (3)
* ``emotion``: :data:`EMOTION_CLASSES` (6)
* ``desire``: :data:`DESIRE_CLASSES` (7)

Label values are matched case-insensitively after stripping spaces; any other value is an error
naming the file, the row and the allowed values. The sample text is the title and the caption
joined by a space (``text="title+caption"``, the default; the caption is left out when it equals
the title) or only one of them.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Literal

from mmfuse.data.datasets.base import CheckedCsvReader, OnBadImage, ParseReport, Record, RecordDataset, select_tasks
from mmfuse.utils.io import read_text_file

SENTIMENT_CLASSES: tuple[str, ...] = ("positive", "neutral", "negative")
EMOTION_CLASSES: tuple[str, ...] = ("happiness", "sad", "neutral", "disgust", "anger", "fear")
DESIRE_CLASSES: tuple[str, ...] = (
    "vengeance",
    "curiosity",
    "social-contact",
    "family",
    "tranquility",
    "romance",
    "none",
)
TASKS: dict[str, tuple[str, ...]] = {
    "sentiment": SENTIMENT_CLASSES,
    "emotion": EMOTION_CLASSES,
    "desire": DESIRE_CLASSES,
}
_COLUMNS = {
    "title": "Title",
    "caption": "Caption",
    "sentiment": "Sentiment",
    "emotion": "Emotion",
    "desire": "Desire",
}
TextField = Literal["title+caption", "title", "caption"]


def read_msed_csv(
    path: str | os.PathLike[str],
    tasks: dict[str, tuple[str, ...]] | None = None,
    text: TextField = "title+caption",
) -> tuple[list[Record], ParseReport]:
    """Records of one MSED csv.

    Row N (1-based) gets id ``<csv folder name>/N`` and image ``<csv folder>/images/N.jpg``.
    """
    tasks = TASKS if tasks is None else tasks
    if text not in ("title+caption", "title", "caption"):
        raise ValueError(f"text: expected 'title+caption', 'title' or 'caption', got {text!r}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"MSED csv {str(p)!r} does not exist")
    report = ParseReport(source=str(p))
    records = []
    with io.StringIO(read_text_file(p, "MSED csv"), newline="") as fh:
        reader = CheckedCsvReader(csv.reader(fh), p)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{p}: empty file, expected a header with {', '.join(_COLUMNS.values())}")
        position = {name.strip().lower(): k for k, name in enumerate(header)}
        missing = [col for key, col in _COLUMNS.items() if key not in position]
        if missing:
            raise ValueError(
                f"{p}: missing column(s) {missing}; expected a header with "
                f"{', '.join(_COLUMNS.values())} (optionally 'Inference Sequence'), got {header}"
            )
        for row_number, fields in enumerate(reader, start=1):
            report.rows += 1
            if len(fields) < len(header):
                raise ValueError(
                    f"{p} row {row_number} (line {reader.line_num}): expected {len(header)} fields, "
                    f"got {len(fields)}"
                )
            field = {key: fields[position[key]].strip() for key in _COLUMNS}
            labels = {}
            for task, classes in tasks.items():
                value = field[task].lower()
                if value not in classes:
                    raise ValueError(
                        f"{p} row {row_number} (line {reader.line_num}): {_COLUMNS[task]} must be one of "
                        f"{', '.join(classes)}, got {field[task]!r}"
                    )
                labels[task] = classes.index(value)
            title, caption = field["title"], field["caption"]
            if text == "title":
                body = title
            elif text == "caption":
                body = caption
            else:
                body = title if caption == title or not caption else f"{title} {caption}".strip()
            records.append(
                Record(
                    f"{p.parent.name}/{row_number}", body, labels, p.parent / "images" / f"{row_number}.jpg"
                )
            )
    report.kept = len(records)
    return records, report


def build_msed(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    tasks: list[str] | None = None,
    text: TextField = "title+caption",
    on_bad_image: OnBadImage = "error",
) -> RecordDataset:
    """One split of MSED; ``tasks`` defaults to all three (sentiment, emotion, desire)."""
    if data_dir is None:
        raise ValueError("msed: data_dir is required (the MSED root with train/, dev/, test/)")
    if split not in ("train", "dev", "test"):
        raise ValueError(f"msed: split: expected 'train', 'dev' or 'test', got {split!r}")
    selected = select_tasks(tasks, TASKS, "msed: tasks")
    records, report = read_msed_csv(Path(data_dir) / split / f"{split}.csv", selected, text)
    return RecordDataset(
        records, selected, name="msed", split=split, on_bad_image=on_bad_image, report=report
    )
