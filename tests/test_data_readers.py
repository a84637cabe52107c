"""Image loading, the bad-image policy, and the MVSA / MSED readers on small files written here in
the exact original formats (no real MVSA / MSED files are available to the tests)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmfuse.data import BadImageError, ClassificationCollator, build_dataset, check_image, load_image
from mmfuse.data.datasets.mvsa import aggregate_labels, read_mvsa


def write_jpeg(path, seed: int = 0, size=(24, 16)) -> bytes:
    """A real JPEG of random pixels (so it does not compress to nothing); returns its bytes."""
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def write_truncated_jpeg(path, seed: int = 0) -> None:
    data = write_jpeg(path, seed, size=(64, 48))
    path.write_bytes(data[: len(data) // 2])


# ---- images -----------------------------------------------------------------------------------


def test_load_image_decodes_and_converts_to_rgb(tmp_path):
    write_jpeg(tmp_path / "a.jpg")
    image = load_image(tmp_path / "a.jpg")
    assert image.mode == "RGB" and image.size == (24, 16)
    for mode in ("L", "RGBA", "P", "CMYK"):
        path = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, (5, 7)).save(path)
        assert load_image(path).mode == "RGB" and check_image(path) is None


def test_bad_images_give_errors_naming_the_file(tmp_path):
    write_truncated_jpeg(tmp_path / "cut.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "folder.jpg").mkdir()
    cases = {
        "missing.jpg": "file does not exist",
        "cut.jpg": "corrupt or truncated image data",
        "text.jpg": "not an image PIL can identify",
        "folder.jpg": "not a regular file",
    }
    for name, reason in cases.items():
        with pytest.raises(BadImageError, match=reason) as info:
            load_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and info.value.path == tmp_path / name
        assert reason in check_image(tmp_path / name)


# ---- MVSA, original release --------------------------------------------------------------------


def make_mvsa(root, label_lines, texts: dict[str, bytes], images=None, newline="\n"):
    (root / "data").mkdir(parents=True)
    (root / "labelResultAll.txt").write_bytes(newline.join(label_lines).encode() + newline.encode())
    for tweet_id, raw in texts.items():
        (root / "data" / f"{tweet_id}.txt").write_bytes(raw)
        if images is None or tweet_id in images:
            write_jpeg(root / "data" / f"{tweet_id}.jpg", seed=int(tweet_id))
    return root


SINGLE_PAIRS = {
    "1": "positive,positive",
    "2": "neutral,positive",
    "3": "negative,neutral",
    "4": "neutral,neutral",
    "5": "positive,negative",
    "6": "negative,negative",
    "7": "Positive,Neutral",
    "8": "neutral,negative",
    "9": "negative,positive",
    "10": "positive,neutral",
    "11": "neutral,neutral",
    "12": "negative,negative",
}


@pytest.fixture
def mvsa_single(tmp_path):
    texts = {i: f"tweet number {i} #mvsa\n".encode() for i in SINGLE_PAIRS}
    texts["2"] = "\ufeffcafé ☕ http://t.co/x\r\n".encode("utf-8")  # BOM + CRLF
    texts["3"] = b"caf\xe9 \x93quoted\x94"  # not UTF-8: Windows-1252 with curly quotes
    texts["4"] = b"undefined in cp1252: \x81"  # falls back to Latin-1
    return make_mvsa(
        tmp_path / "MVSA_Single", ["ID\ttext,image", *(f"{i}\t{p}" for i, p in SINGLE_PAIRS.items())], texts
    )


def test_mvsa_single_labels_texts_and_splits(mvsa_single):
    records, report = read_mvsa(mvsa_single, "single")
    labels = {r.id: ("positive", "neutral", "negative")[r.labels["sentiment"]] for r in records}
    assert labels == {
        "1": "positive",
        "2": "positive",
        "3": "negative",
        "4": "neutral",
        "6": "negative",
        "7": "positive",
        "8": "negative",
        "10": "positive",
        "11": "neutral",
        "12": "negative",
    }
    assert report.rows == 12 and report.kept == 10 and dict(report.dropped) == {"text_image_conflict": 2}
    text = {r.id: r.text for r in records}
    assert (
        text["1"] == "tweet number 1 #mvsa"
        and text["2"] == "café ☕ http://t.co/x"
        and text["3"] == "café \u201cquoted\u201d"
        and text["4"] == "undefined in cp1252: \x81"
    )

    splits = {s: build_dataset("mvsa-single", s, data_dir=mvsa_single) for s in ("train", "dev", "test")}
    assert [len(d) for d in splits.values()] == [8, 1, 1]
    ids = [d[i]["id"] for d in splits.values() for i in range(len(d))]
    assert sorted(ids, key=int) == sorted(labels, key=int)
    sample = splits["dev"][0]
    assert sample["image"].mode == "RGB"
    assert ("positive", "neutral", "negative")[sample["labels"]["sentiment"]] == labels[sample["id"]]
    reseeded = build_dataset("mvsa-single", "train", data_dir=str(mvsa_single), seed=5)
    assert [reseeded[i]["id"] for i in range(8)] != [splits["train"][i]["id"] for i in range(8)]


MULTIPLE_ROWS = {  # id: three annotators' (text, image) pairs
    "1": "positive,positive\tpositive,neutral\tneutral,positive",
    "2": "positive,negative\tpositive,negative\tneutral,neutral",
    "3": "neutral,positive\tpositive,neutral\tneutral,neutral",
    "4": "positive,neutral\tnegative,neutral\tneutral,negative",
    "5": "negative,negative\tnegative,positive\tnegative,neutral",
    "6": "neutral,neutral\tneutral,neutral\tpositive,positive",
    "7": "positive,negative\tpositive,negative\tpositive,negative",
}


def test_mvsa_multiple_aggregation_rules(tmp_path):
    root = make_mvsa(
        tmp_path / "MVSA",
        ["ID\ttext,image\ttext,image\ttext,image", *(f"{i}\t{p}" for i, p in MULTIPLE_ROWS.items())],
        {i: b"t" for i in MULTIPLE_ROWS},
        newline="\r\n",
    )
    names = ("positive", "neutral", "negative")
    records, report = read_mvsa(root, "multiple")  # Xu & Mao: per-modality majority, then combine
    assert {r.id: names[r.labels["sentiment"]] for r in records} == {
        "1": "positive",
        "3": "neutral",
        "6": "neutral",
    }
    assert dict(report.dropped) == {"text_image_conflict": 2, "no_text_majority": 1, "no_image_majority": 1}
    assert report.examples["no_text_majority"] == ["4"]
    records, report = read_mvsa(root, "multiple", "per-annotator")  # combine per annotator, then majority
    assert {r.id: names[r.labels["sentiment"]] for r in records} == {
        "1": "positive",
        "3": "positive",
        "4": "negative",
        "5": "negative",
        "6": "neutral",
    }
    assert dict(report.dropped) == {"no_majority": 2}
    ds = build_dataset(
        "mvsa-multiple",
        "train",
        data_dir=root,
        dev_fraction=0.0,
        test_fraction=0.0,
        multiple_rule="per-annotator",
    )
    assert len(ds) == 5 and ds.label_counts("sentiment") == {"positive": 2, "neutral": 1, "negative": 2}
    with pytest.raises(ValueError, match="multiple_rule: expected 'xu-mao' or 'per-annotator'"):
        aggregate_labels([("positive", "positive")] * 3, "vote")


def test_mvsa_errors(mvsa_single, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"line 2: expected 3 'text,image' label pair\(s\), got 1 "
        r"\(this looks like MVSA-Single: use 'mvsa-single'\)",
    ):
        build_dataset("mvsa-multiple", "train", data_dir=mvsa_single)
    (mvsa_single / "labelResultAll.txt").write_text("ID\ttext,image\n1\tpositve,neutral\n")
    with pytest.raises(
        ValueError,
        match=r"labelResultAll.txt line 2: expected 'text,image' with labels in .*'positve,neutral'",
    ):
        read_mvsa(mvsa_single, "single")
    (mvsa_single / "labelResultAll.txt").write_text("ID\ttext,image\n99\tpositive,neutral\n")
    with pytest.raises(FileNotFoundError, match=r"MVSA text file .*99.txt' does not exist"):
        read_mvsa(mvsa_single, "single")
    with pytest.raises(FileNotFoundError, match="expected a 'data' folder"):
        build_dataset("mvsa-single", "train", data_dir=tmp_path / "empty")
    with pytest.raises(ValueError, match="mvsa-single: data_dir is required"):
        build_dataset("mvsa-single", "train")


# ---- MVSA, CLMLF JSON splits -------------------------------------------------------------------


def make_clmlf(root):
    folder = root / "MVSA-single" / "10-flod-1"
    folder.mkdir(parents=True)
    splits = {
        "train": [
            {"id": "11", "text": "good day ", "emotion_label": 0},
            {"id": 12, "text": "meh", "emotion_label": 1},
        ],
        "dev": [{"id": "13", "text": "bad day", "emotion_label": 2}],
        "test": [{"id": "14", "text": "?? fine", "emotion_label": 0}],
    }
    for split, items in splits.items():
        (folder / f"{split}.json").write_text(json.dumps(items))
        for item in items:
            write_jpeg(root / "MVSA-single" / "dataset_image" / f"{item['id']}.jpg", seed=int(item["id"]))
    return folder


def test_mvsa_json_splits(tmp_path):
    folder = make_clmlf(tmp_path)
    train = build_dataset("mvsa-json", "train", data_dir=folder)  # images found in ../dataset_image
    assert [(s["id"], s["text"], s["labels"]) for s in (train[0], train[1])] == [
        ("11", "good day", {"sentiment": 0}),
        ("12", "meh", {"sentiment": 1}),
    ]
    assert train.tasks == {"sentiment": ("positive", "neutral", "negative")}
    assert build_dataset("mvsa-json", "dev", data_dir=folder)[0]["labels"] == {"sentiment": 2}
    assert build_dataset(
        "mvsa-json", "test", data_dir=folder, image_dir=str(tmp_path / "MVSA-single" / "dataset_image")
    )[0]["image"].size == (24, 16)


def test_mvsa_json_errors(tmp_path):
    folder = make_clmlf(tmp_path)
    (folder / "dev.json").write_text(json.dumps([{"id": "1", "text": "x", "emotion_label": 3}]))
    with pytest.raises(ValueError, match=r"dev.json item 0 \(id '1'\): emotion_label must be 0 \(positive\)"):
        build_dataset("mvsa-json", "dev", data_dir=folder)
    (folder / "dev.json").write_text(json.dumps([{"id": "1", "label": 0}]))
    with pytest.raises(
        ValueError, match="dev.json item 0: expected an object with keys 'id', 'text', 'emotion_label'"
    ):
        build_dataset("mvsa-json", "dev", data_dir=folder)
    (folder / "dev.json").write_text("{}")
    with pytest.raises(ValueError, match="dev.json: expected a JSON list"):
        build_dataset("mvsa-json", "dev", data_dir=folder)
    (folder / "dev.json").unlink()
    with pytest.raises(FileNotFoundError, match="mvsa-json: no dev.json / valid.json / val.json in"):
        build_dataset("mvsa-json", "dev", data_dir=folder)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "train.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="no image folder found .* pass image_dir"):
        build_dataset("mvsa-json", "train", data_dir=bare)


# ---- MSED --------------------------------------------------------------------------------------

MSED_TRAIN = (
    "Title,Caption,Sentiment,Emotion,Desire,Inference Sequence\n"
    '"Happy kids, running",Kids run on the beach,positive,happiness,curiosity,"seq, 1"\n'
    "Angry man,Angry man,negative,anger,vengeance,x\n"
    'Revenge,"A series on ""problematic"" relationships",Negative ,Fear,none,y\n'
    'Quiet lake,"Man fishing\nat dawn",neutral,neutral,tranquility,z\n'
)
MSED_DEV = "Title,Caption,Sentiment,Emotion,Desire\r\nFamily,Father and son,positive,happiness,family\r\n"


def make_msed(root):
    for split, text, rows in (("train", MSED_TRAIN, 4), ("dev", MSED_DEV, 1), ("test", MSED_DEV, 1)):
        (root / split).mkdir(parents=True)
        (root / split / f"{split}.csv").write_text(text, newline="")
        for n in range(1, rows + 1):
            write_jpeg(root / split / "images" / f"{n}.jpg", seed=n)
    return root


def test_msed_reader(tmp_path):
    root = make_msed(tmp_path / "MSED")
    train = build_dataset("msed", "train", data_dir=root)
    assert train.num_classes == {"sentiment": 3, "emotion": 6, "desire": 7}
    samples = [train[i] for i in range(len(train))]
    assert [s["id"] for s in samples] == ["train/1", "train/2", "train/3", "train/4"]
    assert [s["text"] for s in samples] == [
        "Happy kids, running Kids run on the beach",
        "Angry man",
        'Revenge A series on "problematic" relationships',
        "Quiet lake Man fishing\nat dawn",
    ]
    assert [s["labels"] for s in samples] == [
        {"sentiment": 0, "emotion": 0, "desire": 1},
        {"sentiment": 2, "emotion": 4, "desire": 0},
        {"sentiment": 2, "emotion": 5, "desire": 6},
        {"sentiment": 1, "emotion": 2, "desire": 4},
    ]
    # image of row N is images/N.jpg
    assert np.array_equal(
        np.asarray(samples[2]["image"]), np.asarray(load_image(root / "train/images/3.jpg"))
    )
    dev = build_dataset("msed", "dev", data_dir=root, tasks=["emotion"], text="caption")
    assert dev[0]["labels"] == {"emotion": 0} and dev[0]["text"] == "Father and son"


def test_msed_errors(tmp_path):
    root = make_msed(tmp_path / "MSED")
    (root / "dev" / "dev.csv").write_text("Title,Caption,Sentiment,Emotion,Desire\nA,B,positive,joy,none\n")
    with pytest.raises(
        ValueError,
        match=r"dev.csv row 1 \(line 2\): Emotion must be one of happiness, sad, neutral, "
        r"disgust, anger, fear, got 'joy'",
    ):
        build_dataset("msed", "dev", data_dir=root)
    (root / "dev" / "dev.csv").write_text("Title,Sentiment,Emotion,Desire\nA,positive,sad,none\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Caption'\]"):
        build_dataset("msed", "dev", data_dir=root)
    with pytest.raises(FileNotFoundError, match=r"MSED csv .*test.csv' does not exist"):
        build_dataset("msed", "test", data_dir=tmp_path)


# ---- bad images inside a data set --------------------------------------------------------------


@pytest.fixture
def msed_with_bad_images(tmp_path):
    root = make_msed(tmp_path / "MSED")
    (root / "train" / "images" / "2.jpg").unlink()
    write_truncated_jpeg(root / "train" / "images" / "4.jpg")
    return root


def test_bad_image_is_a_clear_error_by_default(msed_with_bad_images):
    train = build_dataset("msed", "train", data_dir=msed_with_bad_images)
    assert len(train) == 4 and train[0]["image"] is not None
    with pytest.raises(
        BadImageError,
        match=r"images/2.jpg': file does not exist \(item 'train/2' of msed/train; "
        r"pass on_bad_image='skip'",
    ):
        train[1]
    with pytest.raises(BadImageError, match=r"images/4.jpg': corrupt or truncated image data"):
        train[3]


def fake_processor(texts, images):
    return {
        "input_ids": torch.tensor([[len(t)] for t in texts]),
        "attention_mask": torch.ones(len(texts), 1, dtype=torch.long),
        "pixel_values": torch.stack(
            [torch.from_numpy(np.array(i.resize((4, 4)))).permute(2, 0, 1).float() for i in images]
        ),
    }


def test_skip_bad_images_with_a_warning_and_a_count(msed_with_bad_images):
    with pytest.warns(
        UserWarning, match=r"msed/train: skipping 2 item\(s\) with missing or corrupt images"
    ) as caught:
        train = build_dataset("msed", "train", data_dir=msed_with_bad_images, on_bad_image="skip")
    assert "2.jpg (file does not exist)" in str(caught[0].message)
    assert len(train) == 2 and [s.id for s in train.skipped] == ["train/2", "train/4"]
    assert "skipped 2 item(s) with bad images: 2.jpg (file does not exist), 4.jpg (corrupt" in train.summary()
    # a whole epoch runs; a file that breaks after validation is dropped from its batch, not fatal
    (msed_with_bad_images / "train" / "images" / "3.jpg").write_bytes(b"")
    collator = ClassificationCollator(fake_processor)
    with pytest.warns(UserWarning, match="became unreadable after validation"):
        batches = list(DataLoader(train, batch_size=1, collate_fn=collator))
    assert batches[1] is None and batches[0]["labels"]["sentiment"].tolist() == [0]
    assert collator.dropped == 1 and [s.id for s in train.late_failures] == ["train/3"]
    assert "skipped 3 item(s)" in train.summary()
    with pytest.raises(ValueError, match="on_bad_image: expected one of 'error', 'skip', got 'ignore'"):
        build_dataset("msed", "dev", data_dir=msed_with_bad_images, on_bad_image="ignore")
