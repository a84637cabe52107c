"""TRC: the text–image relationship corpus (Vempala & Preoţiuc-Pietro, ACL 2019).

Each tweet has two binary judgements — is the text represented in the image, does the image add
to the tweet's meaning — and their product, a 4-way relation. JML pretrains its relation module
on the binary ``image_adds`` label.

Two file layouts are read (chosen by the header):

* ``textimage.csv`` (current repository file): ``tweet_id`` + 6 label columns + 3 empty columns.
  It is **dirty** and read robustly:

  - CRLF line endings, no newline after the last row: handled by the ``csv`` module.
  - Excel turned 28 ids into scientific notation (``6.92094E+17``). Their labels are fine, so the
    rows are kept, flagged ``scientific_notation_id``; the id cannot be joined with images or
    texts, so those rows are dropped when an image folder or a text file is given.
  - 34 rows are misaligned: 32 carry leftover tweet-text fragments in the label columns; their
    **last six 0/1 values** are the labels (flagged ``misaligned_recovered``). Two rows have only
    five values ``0,0,0,0,1``: the last four still form a valid one-hot 4-way label, which fixes
    both binary labels (``image_notadds_text_notrepr``, confirmed by the authors' older file).
    ``short_rows="recover"`` (default) keeps them (flagged ``five_values_recovered``);
    ``short_rows="drop"`` drops them (4469 rows remain in the public file).
  - Every kept row is checked: the one-hot must have exactly one 1 and agree with the two binary
    columns; a row that does not is dropped (``inconsistent_labels``), never guessed.

* ``textimage-data.csv`` (older file, removed upstream): ``tweet_id,user_id,tweet`` + 6 label
  columns, quoted with ``\\"`` escapes. Clean ids, and it carries the tweet text.

The file has no split column: ``split_indices`` makes a deterministic ``train``/``test`` split
(8:2 by default, as in JML) from ``seed``; ``dev_fraction`` > 0 carves a dev split as well.
No images are distributed. Give ``image_dir`` (``<tweet_id>.jpg``) for image+text samples;
otherwise samples are text-only (``"image": None``). The current file has no tweet text either:
give ``texts``, a JSON-lines file of hydrated tweets (one object per line with the id in
``id_str`` / ``id`` / ``tweet_id`` and the text in ``full_text`` / ``text``, e.g. twarc output),
or read the older file, which has the text. Without text, ``"text"`` is ``""``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from mmfuse.data.datasets.base import (
    OnBadImage,
    ParseReport,
    Record,
    RecordDataset,
    select_tasks,
    train_dev_test_split,
)
from mmfuse.data.images import find_image
from mmfuse.utils.io import read_text_file

LABEL_COLUMNS: tuple[str, ...] = (
    "text_is_represented",
    "image_adds",
    "image_adds_text_repr",
    "image_adds_text_notrepr",
    "image_notadds_text_repr",
    "image_notadds_text_notrepr",
)
#: 4-way relation classes, in the order of the one-hot columns.
RELATION_CLASSES: tuple[str, ...] = LABEL_COLUMNS[2:]
TASKS: dict[str, tuple[str, ...]] = {
    "image_adds": ("image_notadds", "image_adds"),
    "text_repr": ("text_notrepr", "text_repr"),
    "relation": RELATION_CLASSES,
}
DEFAULT_FILE = "textimage.csv"
ShortRows = Literal["recover", "drop"]

_SCI_ID = re.compile(r"^[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]+$")
_DIGITS = re.compile(r"[0-9]+")


@dataclasses.dataclass(frozen=True)
class TRCRow:
    """One labelled row. ``relation`` indexes :data:`RELATION_CLASSES`; ``line`` is 1-based."""

    line: int
    tweet_id: str
    relation: int
    text: str = ""

    @property
    def id_ok(self) -> bool:
        """Whether ``tweet_id`` is a plain integer id that can name an image or a hydrated tweet."""
        return _DIGITS.fullmatch(self.tweet_id) is not None

    @property
    def image_adds(self) -> int:
        return int(self.relation in (0, 1))

    @property
    def text_repr(self) -> int:
        return int(self.relation in (0, 2))

    def labels(self, tasks: Sequence[str]) -> dict[str, int]:
        values = {"image_adds": self.image_adds, "text_repr": self.text_repr, "relation": self.relation}
        return {task: values[task] for task in tasks}


def _relation_from_six(values: list[int]) -> int | None:
    text_repr, image_adds, *one_hot = values
    if sum(one_hot) != 1:
        return None
    relation = one_hot.index(1)
    if (int(relation in (0, 2)), int(relation in (0, 1))) != (text_repr, image_adds):
        return None
    return relation


def _relation_from_five(values: list[int]) -> int | None:
    """Five values: one binary column is missing. The one-hot alone fixes both binaries; the
    remaining binary value must equal one of them, else the row is inconsistent."""
    binary, *one_hot = values
    if sum(one_hot) != 1:
        return None
    relation = one_hot.index(1)
    return relation if binary in (int(relation in (0, 2)), int(relation in (0, 1))) else None


def _trailing_binary(fields: list[str]) -> tuple[list[str], list[int]]:
    """Split ``fields`` (trailing blanks removed) into (leading non-label fields, trailing 0/1 run)."""
    fields = list(fields)
    while fields and not fields[-1].strip():
        fields.pop()
    run: list[int] = []
    while fields and fields[-1].strip() in ("0", "1"):
        run.insert(0, int(fields.pop().strip()))
    return fields, run


_LINE_BREAK = re.compile(r"\r\n|\n|\r")
#: the start of an older-layout record: tweet_id,user_id, (quoted or not)
_OLD_RECORD_START = re.compile(r'^\s*"?[0-9]+"?\s*,\s*"?[0-9]*"?\s*,')
_NUMBER = re.compile(r"^[+-]?\d+([.,]\d*)?$")  # any script's digits: '2', '-1', '1.0', '١'
#: lines an older-layout quoted tweet text may span
_MAX_CONTINUATION_LINES = 50


def _strict_fields(text: str, old_layout: bool) -> list[str] | None:
    """The fields of ``text`` as exactly one well-formed CSV record, else None (unbalanced quote,
    a field over the csv module's size limit, several records)."""
    kwargs = {"escapechar": "\\"} if old_layout else {}
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True, **kwargs))
    except csv.Error:
        return None
    return records[0] if len(records) == 1 else None


def _lenient_fields(text: str) -> list[str]:
    """Split a malformed line on commas, ignoring quotes (the labels are the trailing 0/1 values)."""
    return [f.strip().strip('"') for f in text.split(",")]


def _logical_records(lines: list[str], old_layout: bool) -> Iterator[tuple[int, list[str], bool]]:
    """``(1-based line, fields, well_formed)`` per record. The current layout has no text, so a
    record is one line: an unbalanced quote there is read leniently and never swallows the next
    rows. The older layout's quoted tweets may span lines; a record is extended only while its
    quote is open and the next line does not start a new record (at most 50 lines), else its
    first line is read leniently and the following lines are read as records of their own."""
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        i += 1
        if not text.strip():
            continue
        fields = _strict_fields(text, old_layout)
        if fields is None and old_layout:
            j, joined = i, text
            while j < len(lines) and j - start < _MAX_CONTINUATION_LINES and not _OLD_RECORD_START.match(lines[j]):
                joined += "\n" + lines[j]
                j += 1
                fields = _strict_fields(joined, old_layout)
                if fields is not None:
                    i = j
                    break
        if fields is None:
            yield start + 2, _lenient_fields(text), False  # +2: 1-based, after the header
        else:
            yield start + 2, fields, True


def read_trc(
    path: str | os.PathLike[str], *, short_rows: ShortRows = "recover"
) -> tuple[list[TRCRow], ParseReport]:
    """Parse a TRC csv (either layout, see the module docstring) into rows and a report.

    Raises ``ValueError`` naming the file when the header is not a TRC header, and naming the
    line when the file is not UTF-8.
    """
    if short_rows not in ("recover", "drop"):
        raise ValueError(f"short_rows: expected 'recover' or 'drop', got {short_rows!r}")
    p = Path(path)
    report = ParseReport(source=str(p))
    rows: list[TRCRow] = []
    if not p.is_file():
        raise FileNotFoundError(f"TRC file {str(p)!r} does not exist")
    lines = _LINE_BREAK.split(read_text_file(p, "TRC file"))
    header = _strict_fields(lines[0], False) or _lenient_fields(lines[0])
    names = [h.strip().lower() for h in header]
    if names[:1] != ["tweet_id"]:
        raise ValueError(f"{p}: not a TRC file: expected a header starting with 'tweet_id', got {header[:3]}")
    old_layout = names[1:3] == ["user_id", "tweet"]
    label_start = 3 if old_layout else 1
    if tuple(names[label_start : label_start + 6]) != LABEL_COLUMNS:
        raise ValueError(
            f"{p}: not a TRC file: expected label columns {', '.join(LABEL_COLUMNS)} after "
            f"{'tweet_id,user_id,tweet' if old_layout else 'tweet_id'}, got {header}"
        )
    seen: dict[str, int] = {}  # digit tweet id -> relation of its first row
    for line, fields, well_formed in _logical_records(lines[1:], old_layout):
        if not any(f.strip() for f in fields):
            continue
        report.rows += 1
        tweet_id = fields[0].strip()
        text = fields[2].strip() if old_layout and len(fields) > 2 else ""
        where = f"line {line} ({tweet_id[:40]})"
        if not well_formed:
            report.flag("unbalanced_quote", where)
        if not tweet_id:
            report.drop("empty_id", where)
            continue
        # an older-layout line read leniently has its tweet text split on commas: only its tail counts
        text_split = old_layout and not well_formed
        positional = [f.strip() for f in fields[label_start : label_start + 6]]
        if not text_split and len(positional) == 6 and all(v in ("0", "1") for v in positional):
            # the labels are where the header says; anything after them is extra (the file has 3 empty columns)
            leading, values = [], [int(v) for v in positional]
            if any(f.strip() for f in fields[label_start + 6 :]):
                report.flag("extra_fields", where)
        else:
            leading, values = _trailing_binary(fields[2:] if text_split else fields[label_start:])
        if not text_split and any(_NUMBER.match(f.strip()) for f in leading):  # '2', '-1', '1.0', '١': a bad label
            report.drop("invalid_label_value", where)
            continue
        if len(values) >= 6:
            relation = _relation_from_six(values[-6:])
            if relation is not None and (leading or len(values) > 6):
                report.flag("misaligned_recovered", where)
        elif len(values) == 5:
            if short_rows == "drop":
                report.drop("five_values", where)
                continue
            relation = _relation_from_five(values)
            if relation is not None:
                report.flag("five_values_recovered", where)
        else:
            report.drop("unparseable_labels", where)
            continue
        if relation is None:
            report.drop("inconsistent_labels", where)
            continue
        if _SCI_ID.match(tweet_id):
            report.flag("scientific_notation_id", where)
        elif not _DIGITS.fullmatch(tweet_id):
            report.flag("invalid_id", where)
        else:
            if tweet_id in seen:  # the same tweet twice would also leak between train and test
                report.drop("duplicate_id" if seen[tweet_id] == relation else "conflicting_duplicate_id", where)
                continue
            seen[tweet_id] = relation
        if not old_layout and not well_formed:
            text = ""
        rows.append(TRCRow(line, tweet_id, relation, text))
    report.kept = len(rows)
    return rows, report


def read_hydrated_texts(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{tweet_id: text}`` from a JSON-lines file of tweets (or a JSON list of them).

    Ids are read from ``id_str``, ``id`` or ``tweet_id``; text from ``full_text`` or ``text``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"texts: file {str(p)!r} does not exist")
    raw = read_text_file(p, "texts")
    stripped = raw.lstrip()
    if stripped.startswith("["):
        try:
            items = list(enumerate(json.loads(raw), start=1))
        except json.JSONDecodeError as exc:
            raise ValueError(f"texts: {p} is not valid JSON: {exc}") from exc
    else:
        items = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                try:
                    items.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"texts: {p} line {n} is not valid JSON: {exc}") from exc
    out: dict[str, str] = {}
    for n, obj in items:
        tweet_id = next(
            (obj[k] for k in ("id_str", "id", "tweet_id") if isinstance(obj, dict) and k in obj), None
        )
        text = next((obj[k] for k in ("full_text", "text") if isinstance(obj, dict) and k in obj), None)
        if tweet_id is None or not isinstance(text, str):
            raise ValueError(
                f"texts: {p} entry {n}: expected an object with 'id_str'/'id'/'tweet_id' and "
                f"'full_text'/'text', got {str(obj)[:80]!r}"
            )
        out[str(tweet_id)] = text
    return out


def trc_splits(
    rows: Sequence[TRCRow], seed: int = 0, test_fraction: float = 0.2, dev_fraction: float = 0.0
) -> dict[str, list[TRCRow]]:
    """Deterministic ``train``/``dev``/``test`` partition of ``rows`` (file order kept inside each)."""
    return train_dev_test_split(rows, seed, dev_fraction, test_fraction, "trc")


def build_trc(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    file: str = DEFAULT_FILE,
    tasks: list[str] | None = None,
    image_dir: str | None = None,
    texts: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    dev_fraction: float = 0.0,
    short_rows: ShortRows = "recover",
    on_bad_image: OnBadImage = "error",
) -> RecordDataset:
    """One split of TRC. ``data_dir``: the folder holding ``file`` (or the csv itself).

    ``tasks`` defaults to ``["image_adds"]`` (JML's relation label); also ``text_repr``, ``relation``.
    """
    if data_dir is None:
        raise ValueError("trc: data_dir is required (the folder holding textimage.csv, or the csv itself)")
    path = Path(data_dir)
    path = path / file if path.is_dir() else path
    selected = select_tasks(["image_adds"] if tasks is None else tasks, TASKS, "trc: tasks")
    if split == "dev" and dev_fraction == 0:
        raise ValueError(
            "trc: the file has no dev split; pass dev_fraction > 0 to carve one from the training rows"
        )
    if split not in ("train", "dev", "test"):
        raise ValueError(f"trc: split: expected 'train', 'dev' or 'test', got {split!r}")
    rows, report = read_trc(path, short_rows=short_rows)
    chosen = trc_splits(rows, seed, test_fraction, dev_fraction)[split]

    hydrated = read_hydrated_texts(texts) if texts is not None else None
    if image_dir is not None and not Path(image_dir).is_dir():
        raise FileNotFoundError(f"trc: image_dir {image_dir!r} is not a folder")
    if image_dir is not None or hydrated is not None:
        unjoinable = [r for r in chosen if not r.id_ok]
        chosen = [r for r in chosen if r.id_ok]
        if unjoinable:
            warnings.warn(
                f"trc/{split}: dropping {len(unjoinable)} row(s) whose tweet_id was mangled "
                f"(e.g. {unjoinable[0].tweet_id!r}); they cannot be matched to images or texts",
                stacklevel=2,
            )
    if hydrated is not None:
        missing = [r for r in chosen if r.tweet_id not in hydrated]
        chosen = [r for r in chosen if r.tweet_id in hydrated]
        if missing:
            warnings.warn(
                f"trc/{split}: {len(missing)} tweet(s) have no text in {texts!r} "
                f"(e.g. {missing[0].tweet_id}); they are left out",
                stacklevel=2,
            )
    records = [
        Record(
            id=row.tweet_id,
            text=hydrated[row.tweet_id] if hydrated is not None else row.text,
            labels=row.labels(list(selected)),
            image_path=find_image(image_dir, row.tweet_id) if image_dir is not None else None,
        )
        for row in chosen
    ]
    if report.dropped:
        warnings.warn(f"trc/{split}: {report}", stacklevel=2)
    return RecordDataset(records, selected, name="trc", split=split, on_bad_image=on_bad_image, report=report)
