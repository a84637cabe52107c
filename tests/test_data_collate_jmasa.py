"""Word/sub-token alignment and the joint span collator: hand-computed batches, truncation,
words that tokenize to nothing, both alignment paths, image policy and input errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from jmasa_support import slow_wordpiece_tokenizer
from PIL import Image
from torch.utils.data import DataLoader

from mmfuse.data import build_dataset
from mmfuse.data.collators.jmasa import JMASACollator
from mmfuse.data.collators.word_alignment import align_words, align_words_batch
from mmfuse.encoders.tokenizer import build_wordpiece_tokenizer

QUIRKY = ["RT", "@", "ltsChuckBass", ":", "\u200b", "Chuck", "Bass", "\U0001f600", "\ufe0f", "#", "MCM", "\xa0", "!"]


@pytest.fixture(scope="module")
def tok():
    return build_wordpiece_tokenizer()


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    return slow_wordpiece_tokenizer(tmp_path_factory.mktemp("vocab"))


def expected_alignment(tok, words):
    """Independent reference: tokenize word by word with ``tokenize`` and lay out [CLS] ... [SEP]."""
    ids, owners = [tok.cls_token_id], [-1]
    for w, word in enumerate(words):
        pieces = tok.tokenize(word) or [tok.unk_token]
        ids += tok.convert_tokens_to_ids(pieces)
        owners += [w] * len(pieces)
    return ids + [tok.sep_token_id], owners + [-1]


def test_alignment_matches_a_word_by_word_reference(tok):
    a = align_words(QUIRKY, tok)
    ids, owners = expected_alignment(tok, QUIRKY)
    assert a.input_ids.tolist() == ids and a.word_index.tolist() == owners
    assert a.word_starts.tolist() == [owners.index(w) for w in range(len(QUIRKY))]
    assert a.attention_mask.tolist() == [1] * len(ids) and a.token_type_ids.tolist() == [0] * len(ids)
    assert a.unk_words == (4, 8, 11) and a.num_kept_words == len(QUIRKY)
    tokens = tok.convert_ids_to_tokens(a.input_ids.tolist())
    assert [tokens[i] for i in a.word_starts[[4, 7, 8, 11]].tolist()] == ["[UNK]"] * 4  # emoji is [UNK] itself


@pytest.mark.parametrize("max_length", [None, 3, 6, 9, 14, 40])
def test_fast_and_word_by_word_paths_agree(tok, slow, max_length):
    batch = [QUIRKY, ["\u200b"], ["a", "\u200b", "b"], ["hello", "world"]]
    fast = align_words_batch(batch, tok, max_length=max_length)
    one_by_one = [align_words(words, tok, max_length=max_length) for words in batch]
    by_word = align_words_batch(batch, slow, max_length=max_length)
    forced = align_words_batch(batch, slow, max_length=max_length, use_word_ids=False)
    for a, b, c, d in zip(fast, one_by_one, by_word, forced):
        for key in ("input_ids", "attention_mask", "word_index", "word_starts"):
            assert torch.equal(getattr(a, key), getattr(b, key))
            assert torch.equal(getattr(a, key), getattr(c, key)) and torch.equal(getattr(c, key), getattr(d, key))
        assert a.num_kept_words == b.num_kept_words == c.num_kept_words
        if max_length is not None:
            assert a.input_ids.numel() <= max_length


def test_truncation_keeps_a_prefix_of_words(tok):
    words = ["hello", "big", "world", "again"]  # 'hello' is 4 sub-tokens in the offline vocabulary
    full = align_words(words, tok)
    cut = align_words(words, tok, max_length=7)
    assert cut.input_ids.numel() == 7 and cut.input_ids[-1] == tok.sep_token_id
    assert cut.num_kept_words == 2 and cut.word_starts.tolist()[2:] == [-1, -1]
    assert cut.word_starts.tolist()[:2] == full.word_starts.tolist()[:2]
    assert align_words(words, tok, max_length=2).num_kept_words == 0


def test_alignment_errors(tok, slow):
    with pytest.raises(TypeError, match="words: expected a list of str"):
        align_words("a b", tok)
    with pytest.raises(TypeError, match=r"words\[1\]: expected str, got int"):
        align_words(["a", 3], tok)
    with pytest.raises(ValueError, match="max_length: expected a positive int or None, got 0"):
        align_words(["a"], tok, max_length=0)
    with pytest.raises(ValueError, match="use_word_ids=True needs a fast tokenizer"):
        align_words(["a"], slow, use_word_ids=True)

    class NoUnk:
        is_fast, unk_token, model_input_names = False, None, ["input_ids"]

        def tokenize(self, word):
            return []

    with pytest.raises(ValueError, match=r"tokenize to nothing and the tokenizer NoUnk has no unk_token"):
        align_words(["\u200b"], NoUnk())


# -- the collator -----------------------------------------------------------------------------------
def test_batch_is_exactly_the_hand_computed_one(tok):
    samples = [
        {"id": "a", "words": ["Chuck", "Bass", "is", "everything", "#", "MCM"], "aspects": [(0, 1, 2), (4, 5, 1)]},
        {"id": "b", "words": ["\u200b", "good"], "aspects": [(1, 1, 0)]},
    ]
    batch = JMASACollator(tok)(samples)
    assert set(batch) == {
        "input_ids", "attention_mask", "token_type_ids", "word_starts", "word_mask", "start_labels", "end_labels",
        "spans", "span_mask", "span_polarity", "words",
    }
    ids_a, owners_a = expected_alignment(tok, samples[0]["words"])
    ids_b, owners_b = expected_alignment(tok, samples[1]["words"])
    length = len(ids_a)
    assert batch["input_ids"].tolist() == [ids_a, ids_b + [tok.pad_token_id] * (length - len(ids_b))]
    assert batch["attention_mask"].tolist() == [[1] * length, [1] * len(ids_b) + [0] * (length - len(ids_b))]
    starts_a = [owners_a.index(w) for w in range(6)]
    assert batch["word_starts"].tolist() == [starts_a, [1, 2, 0, 0, 0, 0]]
    assert batch["word_mask"].tolist() == [[True] * 6, [True, True] + [False] * 4]
    assert batch["start_labels"].tolist() == [[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0]]
    assert batch["end_labels"].tolist() == [[0, 1, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0]]
    assert batch["spans"].tolist() == [[[0, 1], [4, 5]], [[1, 1], [0, 0]]]
    assert batch["span_mask"].tolist() == [[True, True], [True, False]]
    assert batch["span_polarity"].tolist() == [[2, 1], [0, -100]]
    dtypes = {k: v.dtype for k, v in batch.items() if torch.is_tensor(v)}
    assert dtypes["start_labels"] == torch.float32 and dtypes["word_mask"] == dtypes["span_mask"] == torch.bool
    assert dtypes["input_ids"] == dtypes["word_starts"] == dtypes["spans"] == dtypes["span_polarity"] == torch.long
    assert batch["words"] == [s["words"] for s in samples]


def test_truncated_words_drop_their_spans_and_warn_once(tok):
    collate = JMASACollator(tok, max_length=8)
    samples = [
        {"words": ["hello", "big", "world", "again", "x"], "aspects": [(0, 0, 1), (1, 2, 2), (4, 4, 0)]},
        {"words": ["a", "b"], "aspects": [(0, 1, 1)]},
    ]
    with pytest.warns(UserWarning, match=r"2 word\(s\) of 1 sample\(s\) cut by max_length=8, 1 aspect span"):
        batch = collate(samples)  # [CLS] he ##l ##l ##o big world [SEP]: 'again' and 'x' are cut
    assert batch["word_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["spans"].tolist() == [[[0, 0], [1, 2]], [[0, 1], [0, 0]]]
    assert batch["span_mask"].tolist() == [[True, True], [True, False]]
    assert batch["start_labels"].tolist() == [[1, 1, 0], [1, 0, 0]] and batch["words"][0][-1] == "x"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collate(samples)  # no second warning
    assert (collate.truncated_words, collate.truncated_samples, collate.dropped_spans) == (4, 2, 2)


def test_fixed_max_spans_pads_and_drops(tok):
    samples = [{"words": list("abcd"), "aspects": [(0, 0, 0), (1, 1, 1), (2, 3, 2)]}, {"words": ["z"], "aspects": []}]
    with pytest.warns(UserWarning, match="1 aspect span"):
        batch = JMASACollator(tok, max_spans=2)(samples)
    assert batch["spans"].shape == (2, 2, 2) and batch["span_mask"].tolist() == [[True, True], [False, False]]
    assert batch["span_polarity"].tolist() == [[0, 1], [-100, -100]] and batch["end_labels"][0].tolist() == [1, 1, 0, 0]
    wide = JMASACollator(tok, max_spans=5)(samples[1:])
    assert wide["spans"].shape == (1, 5, 2) and not wide["span_mask"].any()


def test_prediction_inputs_have_no_label_keys(tok):
    batch = JMASACollator(tok, return_ids=True)([{"id": 7, "words": ["good", "day"]}, {"words": ["x"]}])
    assert not {"spans", "span_mask", "span_polarity", "start_labels", "end_labels"} & set(batch)
    assert batch["ids"] == ["7", ""] and batch["word_mask"].tolist() == [[True, True], [True, False]]


def test_images_need_an_explicit_policy_when_missing(tok):
    def transform(image):
        return torch.from_numpy(__import__("numpy").asarray(image.resize((4, 4)), dtype="float32")).permute(2, 0, 1)

    real = {"id": "r", "words": ["a"], "aspects": [(0, 0, 1)], "image": Image.new("RGB", (9, 7), (255, 0, 0))}
    missing = {"id": "m", "words": ["b"], "aspects": [(0, 0, 1)], "image": None}
    batch = JMASACollator(tok, transform)([real])
    assert batch["pixel_values"].shape == (1, 3, 4, 4) and "image_mask" not in batch
    with pytest.raises(ValueError, match=r"sample 'm' has no image, but image_transform is set.*missing_image='blank'"):
        JMASACollator(tok, transform)([real, missing])
    blank = JMASACollator(tok, transform, missing_image="blank")([real, missing])
    assert blank["image_mask"].tolist() == [True, False] and blank["pixel_values"][1].abs().sum() == 0
    assert blank["pixel_values"][0, 0].min() == 255
    text_only = JMASACollator(tok)([real, missing])  # no transform: images are ignored
    assert "pixel_values" not in text_only and "image_mask" not in text_only
    with pytest.raises(ValueError, match=r"image_transform must return a Tensor \[3, H, W\]"):
        JMASACollator(tok, lambda image: "pixels")([real])


def test_relation_labels_and_dropped_samples(tok):
    collate = JMASACollator(tok)
    batch = collate([None, {"words": ["a"], "relation_label": 1}, {"words": ["b"], "relation_label": 0}])
    assert batch["relation_labels"].tolist() == [1, 0] and collate.dropped == 1
    assert collate([None]) is None and collate.dropped == 2
    with pytest.raises(ValueError, match=r"sample 1 has no 'relation_label' but others in the batch do"):
        collate([{"words": ["a"], "relation_label": 1}, {"words": ["b"]}])
    with pytest.raises(ValueError, match="'relation_label' must be 0 or 1"):
        collate([{"words": ["a"], "relation_label": 2}])


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ({"words": "a b"}, r"sample 0: 'words' must be a non-empty list of str"),
        ({"words": []}, r"'words' must be a non-empty list"),
        ({"text": "a"}, r"expected a dict with 'words'"),
        ({"words": ["a", "b"], "aspects": [(1, 2, 0)]}, r"span \(1, 2\) must satisfy 0 <= start <= end < 2"),
        ({"words": ["a", "b"], "aspects": [(1, 0, 0)]}, r"span \(1, 0\)"),
        ({"words": ["a"], "aspects": [(0, 0, 3)]}, r"polarity 3 is not in \[0, 3\)"),
        ({"words": ["a"], "aspects": [(0, 0)]}, r"aspects\[0\] must be \(start, end, polarity\)"),
        ({"words": ["a"], "aspects": [(0, 0, 1.0)]}, r"aspects\[0\] must hold ints"),
    ],
)
def test_bad_samples_fail_with_a_clear_message(tok, sample, message):
    with pytest.raises((ValueError, TypeError), match=message):
        JMASACollator(tok)([sample])


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="max_length: expected a positive int"):
        JMASACollator(tok, max_length=0)
    with pytest.raises(ValueError, match="max_spans: expected a positive int or None"):
        JMASACollator(tok, max_spans=0)
    with pytest.raises(ValueError, match="missing_image: expected 'error' or 'blank'"):
        JMASACollator(tok, missing_image="black")
    with pytest.raises(TypeError, match="image_transform: expected a callable"):
        JMASACollator(tok, image_transform=3)


def test_dataloader_over_a_twitter_file(tmp_path, tok):
    (tmp_path / "train.tsv").write_text(
        "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String\n"
        "1\t2\t5.jpg\t$T$ is everything # MCM\tChuck Bass\n"
        "2\t1\t5.jpg\tChuck Bass is everything $T$\t# MCM\n"
        "3\t0\t6.jpg\tugh $T$\tMonday\n"
    )
    data = build_dataset("twitter2015", "train", tmp_path)
    (batch,) = DataLoader(data, batch_size=4, collate_fn=JMASACollator(tok))
    assert batch["spans"].tolist() == [[[0, 1], [4, 5]], [[1, 1], [0, 0]]]
    assert batch["span_polarity"].tolist() == [[2, 1], [0, -100]]
