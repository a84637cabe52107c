"""MVSA-Single and MVSA-Multiple (Niu et al., MMM 2016): tweets with a text label and an image label.

Two layouts are read.

**Original release** (``data_dir`` holds ``labelResultAll.txt`` and a ``data/`` folder with
``<ID>.txt`` and ``<ID>.jpg``). ``labelResultAll.txt`` is tab-separated with a header line
(``ID<TAB>text,image``); each row is an ID and, per annotator, a ``text,image`` pair of
``positive`` / ``neutral`` / ``negative``: one pair in MVSA-Single, three in MVSA-Multiple.
The tweet label is derived with the rules of Xu & Mao (MultiSentiNet, CIKM 2017; stated in the
README of github.com/xunan0812/MultiSentiNet), which give the standard 4511 / 17024 tweets:

1. *(MVSA-Multiple only)* each modality's label is the majority over the three annotators: a
   text (image) label is valid only when at least 2 of the 3 annotators gave exactly that label;
   otherwise the tweet is dropped (``no_text_majority`` / ``no_image_majority``).
2. the (text, image) pair gives the tweet label: equal labels → that label; one neutral and one
   polar → the polar label; positive with negative → dropped (``text_image_conflict``).

``multiple_rule="per-annotator"`` is an alternative seen in some re-implementations: step 2 is
applied to each annotator's own pair first (conflicting annotators abstain), then the tweet label
is the label given by at least 2 of the 3 annotators (else ``no_majority``). It keeps a somewhat
different set of tweets; use it only to reproduce work that used it.

The tweet text is read from ``data/<ID>.txt`` (UTF-8; files that are not valid UTF-8 are read as
Windows-1252, and failing that as Latin-1, which never fails) and stripped. The release has no split: a deterministic 8:1:1
train/dev/test split is drawn from ``seed`` (``dev_fraction`` / ``test_fraction``).

**CLMLF JSON splits** (Li et al., Findings of NAACL 2022; github.com/Link-Li/CLMLF,
``dataset/data/MVSA-single/10-flod-1/{train,dev,test}.json``): a JSON list of
``{"id": str, "text": str, "emotion_label": int}`` with **0 = positive, 1 = neutral, 2 = negative**
and images at ``<image_dir>/<id>.jpg`` (CLMLF puts them in ``dataset/data/MVSA-single/dataset_image``).

Class order in both layouts: :data:`MVSA_CLASSES` = ``(positive, neutral, negative)``.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from mmfuse.data.datasets.base import OnBadImage, ParseReport, Record, RecordDataset, train_dev_test_split
from mmfuse.data.images import find_image
from mmfuse.utils.io import read_text_file

MVSA_CLASSES: tuple[str, ...] = ("positive", "neutral", "negative")
TASKS: dict[str, tuple[str, ...]] = {"sentiment": MVSA_CLASSES}
LABEL_FILE = "labelResultAll.txt"
DATA_FOLDER = "data"
MultipleRule = Literal["xu-mao", "per-annotator"]
_VARIANT_ANNOTATORS = {"single": 1, "multiple": 3}


def combine_text_image(text: str, image: str) -> str | None:
    """Xu & Mao's rule for one (text, image) pair: equal → it; neutral + polar → the polar
    label; positive + negative → ``None`` (the tweet is removed)."""
    if text == image:
        return text
    if "neutral" in (text, image):
        return image if text == "neutral" else text
    return None


def _majority(labels: Sequence[str]) -> str | None:
    """The label given by at least 2 of the votes, if any (ties of 1-1-1 → ``None``)."""
    if not labels:
        return None
    label, count = collections.Counter(labels).most_common(1)[0]
    return label if count >= 2 else None


def aggregate_labels(
    pairs: Sequence[tuple[str, str]], rule: MultipleRule = "xu-mao"
) -> tuple[str | None, str]:
    """Tweet label from the annotators' (text, image) pairs, and the reason when it is ``None``.

    One pair (MVSA-Single): :func:`combine_text_image`. Several pairs: ``rule`` (module docstring).
    """
    if len(pairs) == 1:
        label = combine_text_image(*pairs[0])
        return label, "" if label else "text_image_conflict"
    if rule == "xu-mao":
        text = _majority([t for t, _ in pairs])
        image = _majority([i for _, i in pairs])
        if text is None:
            return None, "no_text_majority"
        if image is None:
            return None, "no_image_majority"
        label = combine_text_image(text, image)
        return label, "" if label else "text_image_conflict"
    if rule == "per-annotator":
        votes = [v for v in (combine_text_image(t, i) for t, i in pairs) if v is not None]
        label = _majority(votes)
        return label, "" if label else "no_majority"
    raise ValueError(f"multiple_rule: expected 'xu-mao' or 'per-annotator', got {rule!r}")


def read_label_file(path: str | os.PathLike[str], annotators: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(ID, [(text, image) per annotator])]`` from an MVSA ``labelResultAll.txt``.

    Raises ``ValueError`` naming the file and line for a malformed row, an unknown label or a
    number of annotator pairs other than ``annotators``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"MVSA label file {str(p)!r} does not exist (expected {LABEL_FILE} in the data folder)"
        )
    out = []
    lines = p.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    for n, line in enumerate(lines, start=1):
        fields = line.strip().split("\t") if "\t" in line else line.split()
        if not fields or not fields[0]:
            continue
        if n == 1 and not fields[0].isdigit():  # header: ID<TAB>text,image[<TAB>text,image ...]
            continue
        tweet_id, cells = fields[0].strip(), [c.strip() for c in fields[1:] if c.strip()]
        if not tweet_id.isdigit():
            raise ValueError(f"{p} line {n}: expected a numeric tweet ID first, got {tweet_id!r}")
        if len(cells) != annotators:
            hint = {
                1: " (this looks like MVSA-Single: use 'mvsa-single')",
                3: " (this looks like MVSA-Multiple: use 'mvsa-multiple')",
            }.get(len(cells), "")
            raise ValueError(
                f"{p} line {n}: expected {annotators} 'text,image' label pair(s), got {len(cells)}{hint}"
            )
        pairs = []
        for cell in cells:
            parts = [x.strip().lower() for x in cell.split(",")]
            if len(parts) != 2 or any(x not in MVSA_CLASSES for x in parts):
                raise ValueError(
                    f"{p} line {n}: expected 'text,image' with labels in {MVSA_CLASSES}, got {cell!r}"
                )
            pairs.append((parts[0], parts[1]))
        out.append((tweet_id, pairs))
    return out


def read_tweet_text(path: Path) -> str:
    """Text of an MVSA ``<ID>.txt``, stripped: UTF-8 (BOM allowed), else Windows-1252 (the usual
    encoding of the rest), else Latin-1 (which decodes any byte)."""
    if not path.is_file():
        raise FileNotFoundError(f"MVSA text file {str(path)!r} does not exist")
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding).strip()
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1").strip()


def read_mvsa(
    data_dir: str | os.PathLike[str],
    variant: Literal["single", "multiple"],
    multiple_rule: MultipleRule = "xu-mao",
) -> tuple[list[Record], ParseReport]:
    """All labelled tweets of an original MVSA release, in label-file order, and a report."""
    if variant not in _VARIANT_ANNOTATORS:
        raise ValueError(f"variant: expected 'single' or 'multiple', got {variant!r}")
    root = Path(data_dir)
    folder = root / DATA_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(
            f"mvsa-{variant}: expected a '{DATA_FOLDER}' folder of <ID>.txt / <ID>.jpg in {str(root)!r}"
        )
    report = ParseReport(source=str(root / LABEL_FILE))
    records = []
    for tweet_id, pairs in read_label_file(root / LABEL_FILE, _VARIANT_ANNOTATORS[variant]):
        report.rows += 1
        label, reason = aggregate_labels(pairs, multiple_rule)
        if label is None:
            report.drop(reason, tweet_id)
            continue
        records.append(
            Record(
                tweet_id,
                read_tweet_text(folder / f"{tweet_id}.txt"),
                {"sentiment": MVSA_CLASSES.index(label)},
                find_image(folder, tweet_id),
            )
        )
    report.kept = len(records)
    return records, report


def _build_original(
    variant: Literal["single", "multiple"],
    split: str,
    data_dir,
    seed: int,
    dev_fraction: float,
    test_fraction: float,
    multiple_rule: MultipleRule,
    on_bad_image: OnBadImage,
) -> RecordDataset:
    name = f"mvsa-{variant}"
    if data_dir is None:
        raise ValueError(f"{name}: data_dir is required (the folder with {LABEL_FILE} and {DATA_FOLDER}/)")
    if split not in ("train", "dev", "test"):
        raise ValueError(f"{name}: split: expected 'train', 'dev' or 'test', got {split!r}")
    records, report = read_mvsa(data_dir, variant, multiple_rule)
    chosen = train_dev_test_split(records, seed, dev_fraction, test_fraction, name)[split]
    return RecordDataset(chosen, TASKS, name=name, split=split, on_bad_image=on_bad_image, report=report)


def build_mvsa_single(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    seed: int = 0,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    on_bad_image: OnBadImage = "error",
) -> RecordDataset:
    """One split of MVSA-Single from the original release (8:1:1 by ``seed``)."""
    return _build_original(
        "single", split, data_dir, seed, dev_fraction, test_fraction, "xu-mao", on_bad_image
    )


def build_mvsa_multiple(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    seed: int = 0,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    multiple_rule: MultipleRule = "xu-mao",
    on_bad_image: OnBadImage = "error",
) -> RecordDataset:
    """One split of MVSA-Multiple from the original release (8:1:1 by ``seed``)."""
    return _build_original(
        "multiple", split, data_dir, seed, dev_fraction, test_fraction, multiple_rule, on_bad_image
    )


# ---- CLMLF JSON splits -------------------------------------------------------------------------

_JSON_SPLIT_FILES = {
    "train": ("train.json",),
    "dev": ("dev.json", "valid.json", "val.json"),
    "test": ("test.json",),
}
_IMAGE_DIR_CANDIDATES = ("dataset_image", "../dataset_image", "images", "../images", "data", "../data")


def read_mvsa_json(path: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None) -> list[Record]:
    """Records of one CLMLF-style JSON split file; images at ``<image_dir>/<id>.jpg``."""
    p = Path(path)
    try:
        items = json.loads(read_text_file(p, "MVSA split file"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ValueError(
            f"{p}: expected a JSON list of {{'id', 'text', 'emotion_label'}} objects, "
            f"got {type(items).__name__}"
        )
    records = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not {"id", "text", "emotion_label"} <= set(item):
            raise ValueError(
                f"{p} item {n}: expected an object with keys 'id', 'text', 'emotion_label', "
                f"got {str(item)[:80]!r}"
            )
        label = item["emotion_label"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(MVSA_CLASSES):
            raise ValueError(
                f"{p} item {n} (id {item['id']!r}): emotion_label must be 0 (positive), 1 (neutral) "
                f"or 2 (negative), got {label!r}"
            )
        if not isinstance(item["text"], str):
            raise ValueError(
                f"{p} item {n} (id {item['id']!r}): text must be a string, got {type(item['text']).__name__}"
            )
        tweet_id = str(item["id"])
        if isinstance(item["id"], bool) or not isinstance(item["id"], (str, int)) or not tweet_id.strip() \
                or "/" in tweet_id or "\\" in tweet_id or tweet_id.strip(".") == "":
            raise ValueError(
                f"{p} item {n}: id must be a non-empty string or integer without path separators (it names "
                f"the image file), got {item['id']!r}"
            )
        records.append(
            Record(
                tweet_id,
                item["text"].strip(),
                {"sentiment": label},
                find_image(image_dir, tweet_id) if image_dir is not None else None,
            )
        )
    return records


def build_mvsa_json(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    image_dir: str | None = None,
    on_bad_image: OnBadImage = "error",
) -> RecordDataset:
    """One split of a CLMLF-style MVSA folder (``{train,dev,test}.json``).

    ``image_dir`` defaults to the first existing of ``dataset_image``, ``../dataset_image``,
    ``images``, ``../images``, ``data``, ``../data`` relative to ``data_dir``.
    """
    if data_dir is None:
        raise ValueError("mvsa-json: data_dir is required (the folder with train.json, dev.json, test.json)")
    root = Path(data_dir)
    if split not in _JSON_SPLIT_FILES:
        raise ValueError(f"mvsa-json: split: expected 'train', 'dev' or 'test', got {split!r}")
    path = next((root / f for f in _JSON_SPLIT_FILES[split] if (root / f).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"mvsa-json: no {' / '.join(_JSON_SPLIT_FILES[split])} in {str(root)!r}")
    if image_dir is None:
        found = next((root / c for c in _IMAGE_DIR_CANDIDATES if (root / c).is_dir()), None)
        if found is None:
            raise FileNotFoundError(
                f"mvsa-json: no image folder found next to {str(root)!r} (looked for "
                f"{', '.join(_IMAGE_DIR_CANDIDATES)}); pass image_dir"
            )
        image_dir = str(found.resolve())
    elif not Path(image_dir).is_dir():
        raise FileNotFoundError(f"mvsa-json: image_dir {image_dir!r} is not a folder")
    report = ParseReport(source=str(path))
    records = read_mvsa_json(path, image_dir)
    report.rows = report.kept = len(records)
    return RecordDataset(
        records, TASKS, name="mvsa-json", split=split, on_bad_image=on_bad_image, report=report
    )
