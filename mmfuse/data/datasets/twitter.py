"""Twitter-2015 / Twitter-2017: multimodal aspect (target) sentiment, and the jmasa span task.

The files are TomBERT's (Yu & Jiang, IJCAI 2019; github.com/jefferyYu/TomBERT,
``absa_data/twitter{2015,2017}/{train,dev,test}.{tsv,txt}``). One row is one (tweet, aspect)
pair: the tweet with **one** aspect occurrence replaced by the token ``$T$``, the aspect string,
its polarity and the image file name. Two forms are read:

* **aspect** form (TomBERT's task, target-oriented sentiment): one sample per row, class
  ``labels["sentiment"]``.
* **jmasa** form (the JMASA task, also called MABSA, as in JML and VLP-MABSA): one sample per tweet, rebuilt from
  the rows: ``words = toks[:i] + target.split(' ') +
  toks[i+1:]`` with ``toks = masked_text.split(' ')`` and ``i = toks.index('$T$')``, giving the
  span ``(i, i + len(target words) - 1)``; **consecutive** rows with the same key
  ``(image_id, ' '.join(words))`` form one tweet.

Polarity coding (both forms): **0 = negative, 1 = neutral, 2 = positive** (:data:`POLARITIES`).
The tsv ``label`` column is used as is; the txt polarity ``-1 / 0 / 1`` becomes ``polarity + 1``
(TomBERT's ``process_absa_data.py``). Spans are word indices, **end inclusive**.

Words are the tweet's space-separated tokens: the text is pre-tokenised (hashtags and mentions
are split, ``# MCM``, ``@ user``), so no further splitting is done. Quirks handled (and counted in
each data set's ``report``):

* the tsv header is inconsistent (train/dev: 5 names, test: 4 names over 5-field rows): line 1 is
  skipped when it is a header and columns are taken by position, never by name;
* ``.txt`` first lines may carry leading/trailing spaces: stripped, as TomBERT does; a
  double space (an empty token) is removed (``empty_tokens_removed``);
* lines are split on ``\\n`` only (and a trailing ``\\r`` removed), never with
  ``str.splitlines`` or Python's universal newlines, which would also split inside tweets at a
  lone ``\\r``, U+2028, U+0085 or U+001C; a lone ``\\r`` inside a line becomes a space
  (``carriage_return_in_line``);
* the file must be UTF-8: other bytes stop with an error naming the file and line;
* the index column must be ASCII digits (``int('²')`` fails, ``'١'`` is not an index): other
  values are flagged (``bad_index``) and replaced by the row number; an empty image id, or one
  with a path separator, drops the row (``bad_image_id``);
* non-ASCII tokens (emoji, U+200B zero-width space, variation selectors) are kept as words: the
  word/sub-token alignment (:mod:`mmfuse.data.collators.word_alignment`) gives words that a tokenizer
  reduces to nothing an ``[UNK]`` position, so span indices stay aligned;
* one text with two images (Twitter-2015 train, ``RT @ JoshuaAuger : When you loose your mum in
  tesco``): tweets are keyed by image **and** text, so they stay two tweets;
* malformed rows are dropped and counted, never guessed: wrong field count (``bad_field_count``),
  label not in 0/1/2 (``bad_label``), no standalone ``$T$`` or more than one
  (``target_marker_missing`` / ``target_marker_repeated``), empty target (``empty_target``);
* within a tweet, a row repeating an aspect span is dropped (``duplicate_aspect``, or
  ``conflicting_duplicate_aspect`` when its polarity differs: the first row wins); overlapping
  spans are kept and flagged (``overlapping_aspects``); a key that reappears after other rows
  starts a new tweet, as the grouping rule says, and is flagged (``repeated_tweet_key``).

Images are not distributed. ``image_dir`` points at TomBERT's image folder
(``twitter2015_images/<image_id>``); without it samples carry ``"image": None``. The bad-image
policy (``on_bad_image``) is :mod:`mmfuse.data.datasets.base`'s.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from mmfuse.data.datasets.base import (
    OnBadImage,
    ParseReport,
    Record,
    RecordDataset,
    Sample,
)
from mmfuse.data.images import find_image
from mmfuse.utils.io import read_text_file

__all__ = [
    "POLARITIES",
    "Aspect",
    "AspectRow",
    "JMASATweet",
    "TwitterAspectDataset",
    "TwitterDataset",
    "TwitterJMASADataset",
    "build_twitter",
    "build_twitter2015",
    "build_twitter2017",
    "group_tweets",
    "read_rows",
    "read_tsv",
    "read_txt",
    "rebuild_row",
    "split_file",
]

#: Polarity classes in label-index order (tsv ``label``; txt polarity + 1).
POLARITIES: tuple[str, ...] = ("negative", "neutral", "positive")
TARGET_MARKER = "$T$"
SPLITS: tuple[str, ...] = ("train", "dev", "test")
TWITTER_DATASETS: tuple[str, ...] = ("twitter2015", "twitter2017")
Form = Literal["jmasa", "aspect"]
FileFormat = Literal["tsv", "txt"]


@dataclasses.dataclass(frozen=True)
class AspectRow:
    """One (tweet, aspect) row with the tweet rebuilt.

    Attributes:
        index: 1-based row number (the tsv ``index`` column; the record number in a txt file).
        line: 1-based line in the source file (first line of the record for txt).
        label: polarity class, 0 negative / 1 neutral / 2 positive.
        image_id: image file name as written, e.g. ``"1860693.jpg"``.
        masked_text: the tweet with the aspect replaced by ``$T$`` (stripped).
        target: the aspect string.
        words: the rebuilt tweet, one entry per space-separated token.
        start, end: the aspect's word span in ``words``, ``end`` inclusive.
    """

    index: int
    line: int
    label: int
    image_id: str
    masked_text: str
    target: str
    words: tuple[str, ...]
    start: int
    end: int

    @property
    def key(self) -> tuple[str, str]:
        """The tweet key of the grouping rule: (image id, sentence)."""
        return self.image_id, " ".join(self.words)


@dataclasses.dataclass(frozen=True)
class Aspect:
    """An aspect of a tweet: word span ``[start, end]`` (inclusive), polarity class and its words."""

    start: int
    end: int
    polarity: int
    term: str

    def as_tuple(self) -> tuple[int, int, int]:
        return self.start, self.end, self.polarity


@dataclasses.dataclass(frozen=True)
class JMASATweet:
    """One tweet of the jmasa task: its words, all aspects (sorted by position) and its image."""

    id: str
    image_id: str
    words: tuple[str, ...]
    aspects: tuple[Aspect, ...]
    rows: tuple[int, ...]

    @property
    def sentence(self) -> str:
        return " ".join(self.words)


def _tokens(text: str) -> tuple[list[str], bool]:
    """``text.split(' ')`` without empty tokens, and whether any had to be removed."""
    raw = text.split(" ")
    tokens = [t for t in raw if t]
    return tokens, len(tokens) != len(raw)


def rebuild_row(
    masked_text: str, target: str, *, index: int, line: int, label: int, image_id: str, report: ParseReport
) -> AspectRow | None:
    """Rebuild the tweet words and the aspect span of one row (README 1e); ``None`` (counted in
    ``report``) when the row cannot be rebuilt unambiguously."""
    where = f"line {line} (row {index})"
    masked_text = masked_text.strip()
    target = target.strip()
    toks, removed_t = _tokens(masked_text)
    aspect, removed_a = _tokens(target)
    if not aspect:
        report.drop("empty_target", where)
        return None
    count = toks.count(TARGET_MARKER)
    if count == 0:
        report.drop("target_marker_missing", where)
        return None
    if count > 1:
        report.drop("target_marker_repeated", where)
        return None
    if removed_t or removed_a:
        report.flag("empty_tokens_removed", where)
    i = toks.index(TARGET_MARKER)
    words = (*toks[:i], *aspect, *toks[i + 1 :])
    return AspectRow(index, line, label, image_id.strip(), masked_text, target, words, i, i + len(aspect) - 1)


def _lines(path: Path, report: ParseReport | None = None) -> list[str]:
    """Lines split on ``\\n`` only (see the module docstring), ``\\r`` removed, BOM tolerated."""
    if not path.is_file():
        raise FileNotFoundError(f"Twitter file {str(path)!r} does not exist")
    text = read_text_file(path, "Twitter file")
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    for number, line in enumerate(lines, start=1):
        if "\r" in line:
            lines[number - 1] = line.replace("\r", " ")
            if report is not None:
                report.flag("carriage_return_in_line", f"line {number}")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    return lines


_ASCII_INT = re.compile(r"[0-9]+")


def _is_ascii_int(text: str) -> bool:
    return _ASCII_INT.fullmatch(text.strip()) is not None


def _bad_image_id(image_id: str) -> bool:
    name = image_id.strip()
    return not name or "/" in name or "\\" in name or name in (".", "..") or not (Path(name).stem or name).strip(".")


def _is_header(fields: list[str]) -> bool:
    return not _is_ascii_int(fields[0])


def read_tsv(path: str | os.PathLike[str]) -> tuple[list[AspectRow], ParseReport]:
    """Rows of a TomBERT ``.tsv`` file: ``index, label (0/1/2), image_id, masked_text, target``.

    Line 1 is skipped when it is a header (its first field is not a number); columns are taken by
    position (the headers disagree between splits).
    """
    p = Path(path)
    report = ParseReport(source=str(p))
    rows: list[AspectRow] = []
    for number, line in enumerate(_lines(p, report), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if number == 1 and _is_header(fields):
            continue
        report.rows += 1
        if len(fields) != 5:
            report.drop("bad_field_count", f"line {number}: {len(fields)} fields")
            continue
        index, label, image_id, masked_text, target = fields
        if label.strip() not in ("0", "1", "2"):
            report.drop("bad_label", f"line {number}: label {label!r}")
            continue
        if _bad_image_id(image_id):
            report.drop("bad_image_id", f"line {number}: image id {image_id!r}")
            continue
        if _is_ascii_int(index):
            row_index = int(index)
        else:
            report.flag("bad_index", f"line {number}: index {index!r}")
            row_index = report.rows
        row = rebuild_row(
            masked_text, target, index=row_index, line=number, label=int(label), image_id=image_id, report=report
        )
        if row is not None:
            rows.append(row)
    report.kept = len(rows)
    return rows, report


def read_txt(path: str | os.PathLike[str]) -> tuple[list[AspectRow], ParseReport]:
    """Rows of a TomBERT ``.txt`` file: 4-line records (masked text, target, polarity -1/0/1, image).

    Labels are ``polarity + 1`` so that both file formats share :data:`POLARITIES`.
    Raises ``ValueError`` naming the file when its line count is not a multiple of 4.
    """
    p = Path(path)
    report = ParseReport(source=str(p))
    lines = _lines(p, report)
    if len(lines) % 4:
        raise ValueError(
            f"{p}: expected 4-line records (text with $T$, target, polarity, image), "
            f"got {len(lines)} lines, which is not a multiple of 4"
        )
    rows: list[AspectRow] = []
    for k in range(len(lines) // 4):
        masked_text, target, polarity, image_id = lines[4 * k : 4 * k + 4]
        number = 4 * k + 1
        report.rows += 1
        if polarity.strip() not in ("-1", "0", "1"):
            report.drop("bad_label", f"line {number + 2}: polarity {polarity!r}")
            continue
        if _bad_image_id(image_id):
            report.drop("bad_image_id", f"line {number + 3}: image id {image_id!r}")
            continue
        row = rebuild_row(
            masked_text,
            target,
            index=k + 1,
            line=number,
            label=int(polarity) + 1,
            image_id=image_id,
            report=report,
        )
        if row is not None:
            rows.append(row)
    report.kept = len(rows)
    return rows, report


def read_rows(path: str | os.PathLike[str]) -> tuple[list[AspectRow], ParseReport]:
    """:func:`read_tsv` or :func:`read_txt`, chosen by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".tsv":
        return read_tsv(path)
    if suffix == ".txt":
        return read_txt(path)
    raise ValueError(f"{path}: expected a TomBERT .tsv or .txt file, got suffix {suffix!r}")


def _overlaps(a: Aspect, b: Aspect) -> bool:
    return a.start <= b.end and b.start <= a.end


def group_tweets(rows: Iterable[AspectRow], report: ParseReport | None = None) -> list[JMASATweet]:
    """The jmasa form: consecutive rows with the same ``(image_id, sentence)`` key are one tweet.

    Tweet ids are the image file's stem (``"1860693"``); a stem seen before (same image with
    another text, or a repeated key) gets ``-2``, ``-3``, ... appended.
    """
    report = report if report is not None else ParseReport(source="rows")
    groups: list[list[AspectRow]] = []
    seen_keys: set[tuple[str, str]] = set()
    for row in rows:
        if groups and groups[-1][0].key == row.key:
            groups[-1].append(row)
            continue
        if row.key in seen_keys:
            report.flag("repeated_tweet_key", f"line {row.line} (row {row.index})")
        seen_keys.add(row.key)
        groups.append([row])

    tweets: list[JMASATweet] = []
    stems: collections.Counter[str] = collections.Counter()
    for group in groups:
        first = group[0]
        aspects: list[Aspect] = []
        for row in group:
            aspect = Aspect(row.start, row.end, row.label, " ".join(row.words[row.start : row.end + 1]))
            same = next((a for a in aspects if (a.start, a.end) == (aspect.start, aspect.end)), None)
            where = f"line {row.line} (row {row.index})"
            if same is not None:
                reason = "duplicate_aspect" if same.polarity == aspect.polarity else "conflicting_duplicate_aspect"
                report.drop(reason, where)
                continue
            if any(_overlaps(a, aspect) for a in aspects):
                report.flag("overlapping_aspects", where)
            aspects.append(aspect)
        stem = Path(first.image_id).stem or first.image_id
        stems[stem] += 1
        tweet_id = stem if stems[stem] == 1 else f"{stem}-{stems[stem]}"
        tweets.append(
            JMASATweet(
                id=tweet_id,
                image_id=first.image_id,
                words=first.words,
                aspects=tuple(sorted(aspects, key=lambda a: (a.start, a.end))),
                rows=tuple(r.index for r in group),
            )
        )
    return tweets


def split_file(data_dir: str | os.PathLike[str], split: str, file_format: FileFormat = "tsv", name: str = "") -> Path:
    """``<data_dir>/<split>.<file_format>``; ``data_dir`` may also be the parent of a ``<name>/``
    folder (e.g. TomBERT's ``absa_data``). ``dev`` falls back to ``valid`` / ``val``."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    if file_format not in ("tsv", "txt"):
        raise ValueError(f"file_format: expected 'tsv' or 'txt', got {file_format!r}")
    root = Path(data_dir)
    folders = [root] + ([root / name] if name else [])
    stems = [split] + (["valid", "val"] if split == "dev" else [])
    for folder in folders:
        for stem in stems:
            candidate = folder / f"{stem}.{file_format}"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{name or 'twitter'}: no {split}.{file_format} in {str(root)!r}"
        + (f" or {str(root / name)!r}" if name else "")
        + " (expected TomBERT's absa_data/<name>/{train,dev,test}.{tsv,txt})"
    )


def _image_path(image_dir: str | None, image_id: str) -> Path | None:
    if image_dir is None:
        return None
    return find_image(image_dir, Path(image_id).stem or image_id)


class TwitterDataset(RecordDataset):
    """Shared part of both forms: parse reports and image handling (lazy, ``on_bad_image``).

    Attributes:
        report: the :class:`~mmfuse.data.datasets.base.ParseReport` of the source file (rows read,
            kept, dropped and flagged by reason).
        image_dir: the image folder, or ``None`` (samples carry ``"image": None``).
    """

    def __init__(
        self,
        records: Sequence[Record],
        tasks: dict[str, tuple[str, ...]],
        *,
        name: str,
        split: str,
        image_dir: str | None,
        on_bad_image: OnBadImage,
        report: ParseReport,
    ) -> None:
        self.image_dir = image_dir
        super().__init__(records, tasks, name=name, split=split, on_bad_image=on_bad_image, report=report)
        if report.dropped:
            warnings.warn(f"{name}/{split}: {report}", stacklevel=4)


class TwitterAspectDataset(TwitterDataset):
    """The aspect (TomBERT) form: one sample per (tweet, aspect) row.

    Samples: ``{"id", "text", "image", "labels": {"sentiment": 0/1/2}}`` plus ``"target"``,
    ``"masked_text"`` (with ``$T$``), ``"words"`` (list[str]), ``"span"`` ((start, end) inclusive)
    and ``"image_id"``. ``text`` is the full sentence (``' '.join(words)``); target-oriented
    models read ``target`` (TomBERT feeds ``masked_text.lower()`` and ``target.lower()``).
    Ids are ``"<split>-<row index>"``.
    """

    def __init__(self, rows: Sequence[AspectRow], *, split: str, image_dir: str | None, **kwargs: Any) -> None:
        self.rows: dict[str, AspectRow] = {}
        records = []
        for row in rows:
            record_id = f"{split}-{row.index}"
            if record_id in self.rows:
                raise ValueError(
                    f"{kwargs.get('name', 'twitter')}/{split}: row index {row.index} appears twice "
                    f"(lines {self.rows[record_id].line} and {row.line}); indices must be unique"
                )
            self.rows[record_id] = row
            records.append(
                Record(
                    id=record_id,
                    text=" ".join(row.words),
                    labels={"sentiment": row.label},
                    image_path=_image_path(image_dir, row.image_id),
                )
            )
        super().__init__(records, {"sentiment": POLARITIES}, split=split, image_dir=image_dir, **kwargs)

    def __getitem__(self, index: int) -> Sample | None:
        sample = super().__getitem__(index)
        if sample is None:
            return None
        row = self.rows[sample["id"]]
        sample.update(
            target=row.target,
            masked_text=row.masked_text,
            words=list(row.words),
            span=(row.start, row.end),
            image_id=row.image_id,
        )
        return sample


class TwitterJMASADataset(TwitterDataset):
    """The jmasa form: one sample per tweet with all its aspects.

    Samples: ``{"id", "text", "words": list[str], "aspects": [(start, end, polarity), ...],
    "image": PIL.Image | None, "image_id"}``; spans are word indices, end inclusive, sorted by
    position. :class:`~mmfuse.data.collators.jmasa.JMASACollator` turns them
    into a batch.
    ``tasks`` is ``{"polarity": POLARITIES}``: the classes of the aspects' polarity, not a
    per-tweet label; :meth:`label_counts` counts aspects.
    """

    def __init__(self, tweets: Sequence[JMASATweet], *, image_dir: str | None, **kwargs: Any) -> None:
        self.tweets: dict[str, JMASATweet] = {t.id: t for t in tweets}
        records = [
            Record(id=t.id, text=t.sentence, labels={}, image_path=_image_path(image_dir, t.image_id))
            for t in tweets
        ]
        super().__init__(records, {"polarity": POLARITIES}, image_dir=image_dir, **kwargs)

    def _check_labels(self, record: Record) -> None:
        tweet = self.tweets[record.id]
        for aspect in tweet.aspects:
            if not (0 <= aspect.start <= aspect.end < len(tweet.words) and 0 <= aspect.polarity < len(POLARITIES)):
                raise ValueError(f"{self.name}: tweet {record.id!r} has an invalid aspect {aspect}")

    def tweet(self, index: int) -> JMASATweet:
        """The parsed tweet of sample ``index`` (no image is read)."""
        return self.tweets[self.records[index].id]

    def labels_of(self, index: int) -> dict[str, int]:
        """Per-tweet labels: none (the polarities belong to the aspects, see :meth:`label_counts`)."""
        return {}

    def label_counts(self, task: str = "polarity") -> dict[str, int]:
        """``{polarity: number of aspects}`` over the data set."""
        if task != "polarity":
            raise KeyError(f"task {task!r}: the jmasa form counts aspect polarities, task 'polarity'")
        counts = collections.Counter(a.polarity for t in self.iter_tweets() for a in t.aspects)
        return {name: counts.get(k, 0) for k, name in enumerate(POLARITIES)}

    def iter_tweets(self) -> Iterator[JMASATweet]:
        return (self.tweets[r.id] for r in self.records)

    @property
    def num_aspects(self) -> int:
        return sum(len(t.aspects) for t in self.iter_tweets())

    def __getitem__(self, index: int) -> Sample | None:
        sample = super().__getitem__(index)
        if sample is None:
            return None
        tweet = self.tweets[sample.pop("id")]
        del sample["labels"]
        return {
            "id": tweet.id,
            "text": tweet.sentence,
            "words": list(tweet.words),
            "aspects": [a.as_tuple() for a in tweet.aspects],
            "image": sample["image"],
            "image_id": tweet.image_id,
        }


def build_twitter(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    name: str,
    form: Form = "jmasa",
    file_format: FileFormat = "tsv",
    image_dir: str | None = None,
    on_bad_image: OnBadImage = "error",
) -> TwitterDataset:
    """One split of a TomBERT Twitter data set in the ``jmasa`` or ``aspect`` form (module docstring)."""
    if data_dir is None:
        raise ValueError(f"{name}: data_dir is required (the folder holding train/dev/test.{file_format})")
    if form not in ("jmasa", "aspect"):
        raise ValueError(f"{name}: form: expected 'jmasa' or 'aspect', got {form!r}")
    if image_dir is not None and not Path(image_dir).is_dir():
        raise FileNotFoundError(f"{name}: image_dir {image_dir!r} is not a folder")
    rows, report = read_rows(split_file(data_dir, split, file_format, name))
    common = dict(name=name, split=split, image_dir=image_dir, on_bad_image=on_bad_image, report=report)
    if form == "aspect":
        return TwitterAspectDataset(rows, **common)
    return TwitterJMASADataset(group_tweets(rows, report), **common)


def _named_builder(name: str) -> Callable[..., TwitterDataset]:
    """The registry builder of data set ``name``: :func:`build_twitter` with ``name`` fixed (the
    options are the keyword parameters, validated by :func:`mmfuse.core.config.call_with_config`)."""

    def builder(
        split: str,
        data_dir: str | os.PathLike[str] | None,
        *,
        form: Form = "jmasa",
        file_format: FileFormat = "tsv",
        image_dir: str | None = None,
        on_bad_image: OnBadImage = "error",
    ) -> TwitterDataset:
        return build_twitter(
            split, data_dir, name=name, form=form, file_format=file_format, image_dir=image_dir,
            on_bad_image=on_bad_image,
        )

    builder.__name__ = builder.__qualname__ = f"build_{name}"
    builder.__doc__ = (
        f"One split of {name} (TomBERT files in ``data_dir``). ``form``: ``'jmasa'`` (one sample per "
        "tweet with all aspect spans) or ``'aspect'`` (one sample per aspect row); ``file_format``: "
        "``'tsv'`` or ``'txt'``; ``image_dir``: TomBERT's image folder (optional)."
    )
    return builder


build_twitter2015 = _named_builder("twitter2015")
build_twitter2017 = _named_builder("twitter2017")
