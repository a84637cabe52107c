"""TRC reader: the real, dirty ``trc/textimage.csv`` of the public data (counts exactly as its
data card states) and small hand-written files for each kind of dirt and both layouts."""

from __future__ import annotations

import collections
import json
import re

import pytest
from PIL import Image

from mmfuse.data import build_dataset
from mmfuse.data.datasets.trc import RELATION_CLASSES, read_hydrated_texts, read_trc, trc_splits

HEADER = (
    "tweet_id,text_is_represented,image_adds,image_adds_text_repr,image_adds_text_notrepr,"
    "image_notadds_text_repr,image_notadds_text_notrepr,,,"
)
FIVE_VALUE_IDS = {"683607683983781889", "700335862714920960"}


@pytest.fixture(scope="module")
def trc_csv(shared_data):
    path = shared_data / "trc" / "textimage.csv"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.data
def test_the_file_is_as_dirty_as_documented(trc_csv):
    raw = trc_csv.read_bytes()
    assert raw.count(b"\r\n") == 4471 and not raw.endswith(
        b"\n"
    )  # CRLF, 1 header + 4471 rows, no final newline
    assert len(re.findall(rb"^\d\.\d+E\+\d+,", raw, flags=re.MULTILINE)) == 28


@pytest.mark.data
def test_counts_match_the_readme(trc_csv):
    rows, report = read_trc(trc_csv, short_rows="drop")
    assert report.rows == 4471 and report.kept == len(rows) == 4469
    assert dict(report.dropped) == {"five_values": 2}
    assert report.flagged["misaligned_recovered"] == 32  # + the 2 five-value rows = 34 misaligned rows
    assert report.flagged["scientific_notation_id"] == 28
    assert "inconsistent_labels" not in report.dropped and "invalid_id" not in report.flagged
    counts = collections.Counter(RELATION_CLASSES[r.relation] for r in rows)
    assert counts == {
        "image_notadds_text_notrepr": 1511,
        "image_adds_text_notrepr": 1147,
        "image_notadds_text_repr": 981,
        "image_adds_text_repr": 830,
    }
    assert sum(not r.id_ok for r in rows) == 28
    assert all(re.fullmatch(r"\d\.\d+E\+\d+", r.tweet_id) for r in rows if not r.id_ok)


@pytest.mark.data
def test_five_value_rows_are_recovered_by_their_one_hot(trc_csv):
    rows, report = read_trc(trc_csv)  # short_rows="recover" (default)
    assert report.kept == 4471 and report.flagged["five_values_recovered"] == 2
    recovered = {r.tweet_id: r for r in rows if r.tweet_id in FIVE_VALUE_IDS}
    assert {RELATION_CLASSES[r.relation] for r in recovered.values()} == {"image_notadds_text_notrepr"}
    assert all(r.image_adds == 0 and r.text_repr == 0 for r in recovered.values())
    # the older, clean file's totals: 1513 / 1147 / 981 / 830
    assert collections.Counter(r.relation for r in rows) == {3: 1513, 1: 1147, 2: 981, 0: 830}
    misaligned = {
        "723200410656247810": "image_adds_text_repr",
        "692910397813342210": "image_notadds_text_repr",
        "726209355679289344": "image_notadds_text_repr",
    }  # text fragments in 1, 2 and 3 columns
    assert {r.tweet_id: RELATION_CLASSES[r.relation] for r in rows if r.tweet_id in misaligned} == misaligned


@pytest.mark.data
def test_split_is_8_to_2_deterministic_and_text_only(trc_csv):
    train = build_dataset("trc", "train", data_dir=trc_csv.parent)
    test = build_dataset("trc", "test", data_dir=trc_csv.parent)
    assert (len(train), len(test)) == (3577, 894)
    assert set(train.tasks) == {"image_adds"}
    train_ids = [train[i]["id"] for i in range(len(train))]
    test_ids = {test[i]["id"] for i in range(len(test))}
    assert not set(train_ids) & test_ids and len(set(train_ids) | test_ids) == 4471
    again = build_dataset("trc", "train", data_dir=trc_csv)  # the csv itself works as data_dir too
    assert train_ids == [again[i]["id"] for i in range(len(again))]
    other = build_dataset("trc", "train", data_dir=trc_csv.parent, seed=1)
    assert [other[i]["id"] for i in range(len(other))] != train_ids
    sample = train[0]
    assert sample["image"] is None and sample["text"] == "" and set(sample["labels"]) == {"image_adds"}
    image_adds = (
        train.label_counts("image_adds")["image_adds"] + test.label_counts("image_adds")["image_adds"]
    )
    assert image_adds == 830 + 1147
    all_tasks = build_dataset(
        "trc", "test", data_dir=trc_csv.parent, tasks=["image_adds", "text_repr", "relation"]
    )
    assert all_tasks.num_classes == {"image_adds": 2, "text_repr": 2, "relation": 4}


@pytest.mark.data
def test_user_image_folder_and_hydrated_texts(trc_csv, tmp_path):
    test = build_dataset("trc", "test", data_dir=trc_csv.parent)
    ids = [test[i]["id"] for i in range(len(test)) if test[i]["id"].isdigit()][:3]
    images = tmp_path / "images"
    images.mkdir()
    for k, tweet_id in enumerate(ids):
        Image.new("RGB", (20, 10), (40 * k, 90, 200)).save(images / f"{tweet_id}.jpg")
    with pytest.warns(UserWarning) as caught:
        ds = build_dataset("trc", "test", data_dir=trc_csv.parent, image_dir=str(images), on_bad_image="skip")
    messages = " | ".join(str(w.message) for w in caught)
    mangled = sum(not i.isdigit() for i in (test[k]["id"] for k in range(len(test))))
    assert f"dropping {mangled} row(s) whose tweet_id was mangled" in messages
    assert f"skipping {len(test) - mangled - 3} item(s) with missing or corrupt images" in messages
    assert [ds[i]["id"] for i in range(len(ds))] == ids and len(ds.skipped) == len(test) - mangled - 3
    assert ds[0]["image"].size == (20, 10)

    hydrated = tmp_path / "tweets.jsonl"
    hydrated.write_text(
        "\n".join(json.dumps({"id_str": i, "full_text": f"tweet {i}"}) for i in ids[:2]) + "\n"
    )
    with pytest.warns(UserWarning) as caught:
        texts = build_dataset("trc", "test", data_dir=trc_csv.parent, texts=str(hydrated))
    assert f"{len(test) - mangled - 2} tweet(s) have no text" in " | ".join(str(w.message) for w in caught)
    assert [(texts[i]["id"], texts[i]["text"], texts[i]["image"]) for i in range(len(texts))] == [
        (ids[0], f"tweet {ids[0]}", None),
        (ids[1], f"tweet {ids[1]}", None),
    ]


def _write(path, lines, newline="\r\n", final=False):
    path.write_bytes((newline.join(lines) + (newline if final else "")).encode("utf-8"))
    return path


def test_each_kind_of_dirt_in_a_small_file(tmp_path):
    path = _write(
        tmp_path / "textimage.csv",
        [
            HEADER,
            "1001,1,1,1,0,0,0,,,",  # clean
            "6.92094E+17,0,1,0,1,0,0,,,",  # Excel-mangled id: kept, flagged
            '1003,"a fragment, with comma\\""",0,0,0,0,0,1,,',  # misaligned by text fragments
            "1004,0,0,0,0,1,,,,",  # only five values
            "1005,1,0,1,0,0,0,,,",  # one-hot disagrees with the binaries
            "1006,1,1,1,1,0,0,,,",  # two ones in the one-hot
            "1007,yes,no,,,,,,,",  # no labels at all
            "",  # blank line
            "1008,0,1,0,1,0,0,,,",
        ],
    )
    rows, report = read_trc(path)
    assert [(r.tweet_id, RELATION_CLASSES[r.relation]) for r in rows] == [
        ("1001", "image_adds_text_repr"),
        ("6.92094E+17", "image_adds_text_notrepr"),
        ("1003", "image_notadds_text_notrepr"),
        ("1004", "image_notadds_text_notrepr"),
        ("1008", "image_adds_text_notrepr"),
    ]
    assert report.rows == 8 and report.kept == 5
    assert dict(report.dropped) == {"inconsistent_labels": 2, "unparseable_labels": 1}
    assert report.flagged == {
        "scientific_notation_id": 1,
        "misaligned_recovered": 1,
        "five_values_recovered": 1,
    }
    assert report.examples["inconsistent_labels"] == ["line 6 (1005)", "line 7 (1006)"]
    assert "dropped 2 (inconsistent_labels)" in str(report)


def test_older_layout_with_text_and_escaped_quotes(tmp_path):
    path = _write(
        tmp_path / "textimage-data.csv",
        [
            (
                '"tweet_id","user_id","tweet","text_is_represented","image_adds","image_adds_text_repr",'
                '"image_adds_text_notrepr","image_notadds_text_repr","image_notadds_text_notrepr"'
            ),
            '"2001","77","he said \\"hi, there\\" https://t.co/x","1","0","0","0","1","0"',
            '"2002","78","plain","0","1","0","1","0","0"',
        ],
        newline="\n",
        final=True,
    )
    rows, _ = read_trc(path)
    assert [(r.tweet_id, r.text, r.relation) for r in rows] == [
        ("2001", 'he said "hi, there" https://t.co/x', 2),
        ("2002", "plain", 1),
    ]
    ds = build_dataset("trc", "train", data_dir=str(path), test_fraction=0.5, tasks=["relation", "text_repr"])
    assert len(ds) == 1 and ds[0]["text"] in ("plain", 'he said "hi, there" https://t.co/x')


def test_errors_name_the_problem(tmp_path):
    bad = _write(tmp_path / "other.csv", ["id,label", "1,0"])
    with pytest.raises(
        ValueError, match=r"other.csv: not a TRC file: expected a header starting with 'tweet_id'"
    ):
        read_trc(bad)
    cols = _write(tmp_path / "cols.csv", ["tweet_id,a,b,c,d,e,f", "1,0,0,0,0,0,1"])
    with pytest.raises(ValueError, match="expected label columns text_is_represented, image_adds"):
        read_trc(cols)
    with pytest.raises(FileNotFoundError, match="TRC file .*nope.csv' does not exist"):
        read_trc(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="short_rows: expected 'recover' or 'drop'"):
        read_trc(bad, short_rows="keep")
    with pytest.raises(ValueError, match="trc: data_dir is required"):
        build_dataset("trc", "train")
    ok = _write(tmp_path / "textimage.csv", [HEADER, "1,1,1,1,0,0,0,,,"])
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['sentiment'\]"):
        build_dataset("trc", "train", data_dir=tmp_path, tasks=["sentiment"])
    with pytest.raises(FileNotFoundError, match="image_dir .* is not a folder"):
        build_dataset("trc", "train", data_dir=ok, image_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="trc: test_fraction: expected a number in"):
        trc_splits([], test_fraction=1.5)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"id": 1, "full_text": "a"}\n{"user": 2}\n')
    with pytest.raises(ValueError, match=r"t.jsonl entry 2: expected an object with 'id_str'"):
        read_hydrated_texts(jsonl)
    jsonl.write_text('[{"tweet_id": "5", "text": "b"}]')
    assert read_hydrated_texts(jsonl) == {"5": "b"}
