"""Twitter-2015/2017 readers: the real TomBERT files of ``twitter2015`` folder of the public data (counts and
quirks exactly as its README states, word/sub-token alignment on their tokens) and small
hand-written files for every quirk the reader handles."""

from __future__ import annotations

import collections
import re
import warnings

import pytest
import torch
from PIL import Image

from mmfuse.core.config import ConfigError
from mmfuse.data import BadImageError, build_dataset, list_datasets
from mmfuse.data.datasets.twitter import POLARITIES, group_tweets, read_tsv, read_txt
from jmasa_support import slow_wordpiece_tokenizer
from mmfuse.data.collators.word_alignment import align_words, align_words_batch
from mmfuse.encoders.tokenizer import build_wordpiece_tokenizer

SPLITS = ("train", "dev", "test")
# the published split sizes and label counts
ROWS = {"train": 3179, "dev": 1122, "test": 1037}
LABELS = {"train": (368, 1883, 928), "dev": (149, 670, 303), "test": (113, 607, 317)}  # neg, neu, pos
TWEETS = {"train": 2101, "dev": 727, "test": 674}
SIZES = {
    "train": {1: 1302, 2: 580, 3: 171, 4: 38, 5: 8, 6: 2},
    "dev": {1: 441, 2: 200, 3: 67, 4: 15, 5: 4},
    "test": {1: 416, 2: 173, 3: 66, 4: 18, 5: 1},
}
HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"


@pytest.fixture(scope="module")
def twitter2015(shared_data):
    path = shared_data / "twitter2015"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def joint(twitter2015):
    return {split: build_dataset("twitter2015", split, twitter2015) for split in SPLITS}


@pytest.fixture(scope="module")
def wordpiece():
    return build_wordpiece_tokenizer()


# -- the real files ---------------------------------------------------------------------------------
@pytest.mark.data
@pytest.mark.parametrize("file_format", ["tsv", "txt"])
def test_counts_per_split_and_label_match_the_readme(twitter2015, joint, file_format):
    for split in SPLITS:
        aspect = build_dataset("twitter2015", split, twitter2015, form="aspect", file_format=file_format)
        tweets = joint[split] if file_format == "tsv" else build_dataset(
            "twitter2015", split, twitter2015, file_format=file_format
        )
        expected = dict(zip(POLARITIES, LABELS[split]))
        assert len(aspect) == ROWS[split] and aspect.label_counts("sentiment") == expected
        assert len(tweets) == TWEETS[split] and tweets.num_aspects == ROWS[split]
        assert tweets.label_counts() == expected
        assert collections.Counter(len(t.aspects) for t in tweets.iter_tweets()) == SIZES[split]
        assert aspect.report.rows == aspect.report.kept == ROWS[split] and not aspect.report.dropped
        assert not aspect.report.flagged


@pytest.mark.data
def test_tsv_and_txt_give_the_same_rows(twitter2015):
    for split in SPLITS:
        raw_txt = (twitter2015 / f"{split}.txt").read_text().split("\n")
        padded = sum(line != line.strip() for line in raw_txt[0::4])
        assert padded == {"train": 366 + 2, "dev": 140, "test": 117 + 1}[split]  # 3 leading + the trailing ones
        tsv, _ = read_tsv(twitter2015 / f"{split}.tsv")
        txt, _ = read_txt(twitter2015 / f"{split}.txt")
        strip = [(r.index, r.label, r.image_id, r.masked_text, r.target, r.words, r.start, r.end) for r in tsv]
        assert strip == [(r.index, r.label, r.image_id, r.masked_text, r.target, r.words, r.start, r.end) for r in txt]


@pytest.mark.data
def test_test_split_header_has_four_names_but_rows_have_five_fields(twitter2015):
    lines = (twitter2015 / "test.tsv").read_text().split("\n")
    assert lines[0].split("\t") == ["index", "#1 ImageID", "#2 String", "#2 String"]
    assert (twitter2015 / "train.tsv").read_text().split("\n")[0] == HEADER
    rows, report = read_tsv(twitter2015 / "test.tsv")
    assert report.rows == len(rows) == 1037 and rows[0].index == 1 and rows[0].image_id == "74960.jpg"
    assert [r.index for r in rows] == list(range(1, 1038))


@pytest.mark.data
def test_worked_examples_of_the_readme(joint):
    by_id = {t.id: t for t in joint["train"].iter_tweets()}
    chuck = by_id["1860693"]
    assert list(chuck.words) == ["RT", "@", "ltsChuckBass", ":", "Chuck", "Bass", "is", "everything", "#", "MCM"]
    assert [(a.start, a.end, a.polarity, a.term) for a in chuck.aspects] == [
        (4, 5, 2, "Chuck Bass"), (8, 9, 1, "# MCM")  # a target that starts with '#'
    ]
    trayvon = by_id["195984"]
    assert trayvon.words[:3] == ("Millions", "For", "Trayvon") and trayvon.words[-3:] == ("New", "York", "City")
    assert [a.as_tuple() for a in trayvon.aspects] == [(0, 2, 1), (11, 13, 0)]
    lebron = by_id["512435"]  # three adjacent neutral spans
    assert [(a.start, a.end, a.term) for a in lebron.aspects] == [
        (4, 5, "LeBron James"), (10, 10, "Johnny"), (11, 12, "Football Browns")
    ]
    sample = joint["train"][0]
    assert sample == {
        "id": "1860693", "text": " ".join(chuck.words), "words": list(chuck.words),
        "aspects": [(4, 5, 2), (8, 9, 1)], "image": None, "image_id": "1860693.jpg",
    }


@pytest.mark.data
def test_same_text_with_two_images_stays_two_tweets(joint, twitter2015):
    text = "RT @ JoshuaAuger : When you loose your mum in tesco"
    same = [t for t in joint["train"].iter_tweets() if t.sentence == text]
    assert [(t.id, [a.as_tuple() for a in t.aspects]) for t in same] == [
        ("1369636", [(10, 10, 1)]), ("1796104", [(10, 10, 0)])  # tesco NEU (row 660), NEG (row 2221)
    ]
    assert [t.rows for t in same] == [(660,), (2221,)]
    aspect = build_dataset("twitter2015", "train", twitter2015, form="aspect")
    rows = {aspect[i]["id"]: aspect[i] for i in (659, 2220)}
    assert rows["train-660"]["labels"] == {"sentiment": 1} and rows["train-2221"]["labels"] == {"sentiment": 0}
    assert rows["train-660"]["target"] == "tesco" and rows["train-660"]["span"] == (10, 10)


@pytest.mark.data
def test_tweet_structure_invariants(joint):
    images = {split: {t.image_id for t in joint[split].iter_tweets()} for split in SPLITS}
    assert not (images["train"] & images["dev"] or images["train"] & images["test"] or images["dev"] & images["test"])
    for split in SPLITS:
        tweets = list(joint[split].iter_tweets())
        assert len({t.id for t in tweets}) == len({t.image_id for t in tweets}) == TWEETS[split]
        for t in tweets:
            spans = [(a.start, a.end) for a in t.aspects]
            assert spans == sorted(spans) and all(e < s2 for (_, e), (s2, _) in zip(spans, spans[1:]))
            assert all(" ".join(t.words[a.start : a.end + 1]) == a.term for a in t.aspects)
            assert list(t.rows) == list(range(t.rows[0], t.rows[0] + len(t.rows)))  # contiguous rows


@pytest.mark.data
def test_alignment_on_the_real_tokens(joint, wordpiece, tmp_path_factory):
    """Every word of every tweet gets a position; its sub-tokens spell the lower-cased word
    (hashtags, mentions, URLs pieces, ':)' ...); the fast and word-by-word paths agree."""
    slow = slow_wordpiece_tokenizer(tmp_path_factory.mktemp("vocab"))
    words_seen = collections.Counter()
    for split in SPLITS:
        tweets = list(joint[split].iter_tweets())
        alignments = align_words_batch([t.words for t in tweets], wordpiece)
        if split == "dev":
            for other, fast in zip(align_words_batch([t.words for t in tweets], slow), alignments):
                assert torch.equal(other.input_ids, fast.input_ids)
                assert torch.equal(other.word_index, fast.word_index)
                assert torch.equal(other.word_starts, fast.word_starts)
        for tweet, fast in zip(tweets, alignments):
            assert fast.num_kept_words == len(tweet.words) and fast.unk_words == ()
            tokens = wordpiece.convert_ids_to_tokens(fast.input_ids.tolist())
            owners, starts = fast.word_index.tolist(), fast.word_starts.tolist()
            pieces = collections.defaultdict(list)
            for position, (owner, token) in enumerate(zip(owners, tokens)):
                if owner >= 0:
                    pieces[owner].append(token)
                    assert starts[owner] <= position
            for w, word in enumerate(tweet.words):
                assert owners[starts[w]] == w and (starts[w] == 0 or owners[starts[w] - 1] != w)
                assert "".join(p.removeprefix("##") for p in pieces[w]) == word.lower(), (word, pieces[w])
                words_seen[word] += 1
    assert words_seen["#"] > 1500 and words_seen["@"] > 2000  # the split hashtags and mentions


@pytest.mark.data
def test_joint_collator_on_the_real_dev_split(joint, wordpiece):
    from mmfuse.data.collators.jmasa import JMASACollator

    dev = joint["dev"]
    collate = JMASACollator(wordpiece, max_length=512)
    samples = [dev[i] for i in range(len(dev))]
    batch = collate(samples)
    assert collate.truncated_words == 0 and collate.dropped_spans == 0
    assert batch["span_mask"].sum() == 1122 and batch["start_labels"].sum() == 1122
    counts = torch.bincount(batch["span_polarity"][batch["span_mask"]], minlength=3).tolist()
    assert counts == [149, 670, 303]
    ids = batch["input_ids"]
    for i, sample in enumerate(samples):
        assert batch["word_mask"][i].sum() == len(sample["words"])
        starts = batch["word_starts"][i, : len(sample["words"])]
        first_pieces = wordpiece.convert_ids_to_tokens(ids[i, starts].tolist())
        assert all(not p.startswith("##") for p in first_pieces)
        for j, (start, end, polarity) in enumerate(sample["aspects"]):
            assert batch["spans"][i, j].tolist() == [start, end] and batch["span_polarity"][i, j] == polarity


# -- hand-written files -----------------------------------------------------------------------------
def write_tsv(path, rows, header=HEADER):
    lines = ([header] if header is not None else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_non_ascii_tokens_crlf_and_line_separators(tmp_path, wordpiece):
    path = tmp_path / "train.tsv"
    text = "I \u200b love $T$ \U0001f600 \ufe0f # NYC\u2028 too"
    path.write_bytes((HEADER + "\r\n" + f"1\t2\t7.jpg\t{text}\tnew york\r\n").encode("utf-8"))
    (tweet,) = group_tweets(read_tsv(path)[0])
    assert tweet.words == ("I", "\u200b", "love", "new", "york", "\U0001f600", "\ufe0f", "#", "NYC\u2028", "too")
    assert [a.as_tuple() for a in tweet.aspects] == [(3, 4, 2)]
    alignment = align_words(tweet.words, wordpiece)
    assert alignment.unk_words == (1, 6)  # U+200B and U+FE0F tokenize to nothing
    assert alignment.num_kept_words == len(tweet.words)
    tokens = wordpiece.convert_ids_to_tokens(alignment.input_ids.tolist())
    assert [tokens[i] for i in alignment.word_starts.tolist()] == [
        "i", "[UNK]", "love", "new", "y", "[UNK]", "[UNK]", "#", "n", "too"
    ]


def test_malformed_rows_are_dropped_counted_and_warned(tmp_path):
    rows = [
        (1, 1, "1.jpg", "a $T$ b", "x"),
        (2, 3, "2.jpg", "a $T$ b", "x"),  # label 3
        (3, 1, "3.jpg", "a b", "x"),  # no marker
        (4, 1, "4.jpg", "$T$ and $T$", "x"),  # two markers
        (5, 1, "5.jpg", "a $T$", "  "),  # empty target
        (6, 1, "6.jpg", "a $T$s b", "x"),  # glued marker: not a standalone token
        (7, 1, "7.jpg", "a  $T$ b", "x"),  # double space
    ]
    path = write_tsv(tmp_path / "train.tsv", rows)
    with path.open("a") as fh:
        fh.write("8\t1\t8.jpg\tonly four fields\n")
    with pytest.warns(UserWarning, match=r"twitter2015/train: .*dropped 1 \(bad_field_count\)"):
        data = build_dataset("twitter2015", "train", tmp_path, form="aspect")
    assert len(data) == 2 and data.report.rows == 8
    assert data.report.dropped == {
        "bad_label": 1, "target_marker_missing": 2, "target_marker_repeated": 1, "empty_target": 1,
        "bad_field_count": 1,
    }
    assert data.report.flagged == {"empty_tokens_removed": 1}
    assert data[1]["words"] == ["a", "x", "b"] and data[1]["span"] == (1, 1)


def test_grouping_duplicates_overlaps_and_repeated_keys(tmp_path):
    rows = [
        (1, 2, "9.jpg", "$T$ and Bob", "Ann"),
        (2, 2, "9.jpg", "$T$ and Bob", "Ann"),  # same aspect again
        (3, 0, "9.jpg", "$T$ and Bob", "Ann"),  # same span, other polarity
        (4, 1, "9.jpg", "$T$ Bob", "Ann and"),  # overlaps (0, 0)
        (5, 1, "8.jpg", "hi $T$", "you"),
        (6, 0, "9.jpg", "Ann and $T$", "Bob"),  # the first key again, after another tweet
    ]
    with pytest.warns(UserWarning, match="dropped 1 \\(duplicate_aspect\\)"):
        data = build_dataset("twitter2017", "train", write_tsv(tmp_path / "train.tsv", rows).parent)
    report = data.report
    assert report.dropped == {"duplicate_aspect": 1, "conflicting_duplicate_aspect": 1}
    assert report.flagged == {"overlapping_aspects": 1, "repeated_tweet_key": 1}
    assert [(t.id, [a.as_tuple() for a in t.aspects]) for t in data.iter_tweets()] == [
        ("9", [(0, 0, 2), (0, 1, 1)]), ("8", [(1, 1, 1)]), ("9-2", [(2, 2, 0)])
    ]


def test_txt_format_polarity_is_shifted_and_lines_are_stripped(tmp_path):
    (tmp_path / "dev.txt").write_text(" $T$ rocks \nRock Band\n1\n5.jpg\nboo $T$\nX\n-1\n6.jpg\n")
    data = build_dataset("twitter2015", "dev", tmp_path, file_format="txt")
    assert [(t.words, [a.as_tuple() for a in t.aspects]) for t in data.iter_tweets()] == [
        (("Rock", "Band", "rocks"), [(0, 1, 2)]), (("boo", "X"), [(1, 1, 0)])
    ]
    (tmp_path / "test.txt").write_text("a $T$\nb\n0\n")
    with pytest.raises(ValueError, match=r"test.txt: expected 4-line records .* 3 lines"):
        build_dataset("twitter2015", "test", tmp_path, file_format="txt")


def test_headerless_file_and_dev_fallback(tmp_path):
    write_tsv(tmp_path / "valid.tsv", [(1, 0, "3.jpg", "$T$ x", "a")], header=None)
    data = build_dataset("twitter2015", "dev", tmp_path)
    assert len(data) == 1 and data.report.rows == 1


def test_builder_errors_name_the_problem(tmp_path):
    assert {"twitter2015", "twitter2017"} <= set(list_datasets())
    with pytest.raises(ValueError, match="twitter2015: data_dir is required"):
        build_dataset("twitter2015", "train")
    with pytest.raises(FileNotFoundError, match=r"twitter2017: no train.tsv in .*absa_data/<name>"):
        build_dataset("twitter2017", "train", tmp_path)
    with pytest.raises(ConfigError, match="form"):
        build_dataset("twitter2015", "train", tmp_path, form="spans")
    with pytest.raises(ValueError, match="split: expected one of 'train', 'dev', 'test'"):
        build_dataset("twitter2015", "validation", tmp_path)
    write_tsv(tmp_path / "train.tsv", [(1, 0, "3.jpg", "$T$ x", "a")])
    with pytest.raises(FileNotFoundError, match="image_dir 'nowhere' is not a folder"):
        build_dataset("twitter2015", "train", tmp_path, image_dir="nowhere")


def test_images_from_image_dir_with_the_bad_image_policy(tmp_path):
    rows = [(1, 2, "10.jpg", "$T$ x", "a"), (2, 1, "10.jpg", "a $T$", "x"), (3, 0, "11.jpg", "$T$ z", "y")]
    write_tsv(tmp_path / "train.tsv", rows)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (20, 10), (0, 200, 0)).save(images / "10.jpg")
    data = build_dataset("twitter2015", "train", tmp_path, image_dir=str(images))
    assert data[0]["image"].size == (20, 10) and data[0]["aspects"] == [(0, 0, 2), (1, 1, 1)]
    with pytest.raises(BadImageError, match=r"11.jpg'.*item '11' of twitter2015/train"):
        data[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lenient = build_dataset("twitter2015", "train", tmp_path, image_dir=str(images), on_bad_image="skip")
        aspects = build_dataset(
            "twitter2015", "train", tmp_path, form="aspect", image_dir=str(images), on_bad_image="skip"
        )
    assert any(re.search(r"skipping 1 item", str(w.message)) for w in caught)
    assert len(lenient) == 1 and lenient.skipped[0].id == "11" and lenient.label_counts()["neutral"] == 1
    assert len(aspects) == 2 and aspects[1]["image"].size == (20, 10) and aspects[1]["target"] == "x"


def test_repeated_row_index_is_an_error_in_the_aspect_form(tmp_path):
    write_tsv(tmp_path / "train.tsv", [(1, 0, "3.jpg", "$T$ x", "a"), (1, 1, "4.jpg", "$T$ y", "b")])
    with pytest.raises(ValueError, match=r"twitter2015/train: row index 1 appears twice \(lines 2 and 3\)"):
        build_dataset("twitter2015", "train", tmp_path, form="aspect")
    assert len(build_dataset("twitter2015", "train", tmp_path)) == 2  # tweets are keyed by image + text
