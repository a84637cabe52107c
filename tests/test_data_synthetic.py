"""The synthetic data set: exact Bayes ceilings, determinism, balance, and that the ceilings hold
for real classifiers trained on the generated samples while a fused classifier beats them."""

from __future__ import annotations

import collections
import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mmfuse.data.datasets.synthetic import (
    COLOUR_RGB,
    SHAPES,
    SYNTHETIC_VOCABULARY,
    SyntheticDataset,
    bayes_ceilings,
    clean_label,
)


@pytest.mark.parametrize("eps", ["0", "0.05", "0.1", "0.3"])
def test_ceilings_match_closed_forms(eps):
    e = Fraction(eps)
    sentiment = bayes_ceilings("sentiment", float(eps))
    # P(y | t): t=neg -> (2/3, 1/3, 0), t=neu -> uniform, t=pos -> (0, 1/3, 2/3);
    # noise moves ε of the mass to the other classes.
    assert sentiment.text == sentiment.image == Fraction(5, 9) - e / 3
    assert sentiment.fused == 1 - e
    match = bayes_ceilings("match", float(eps))
    assert (match.text, match.image, match.fused) == (Fraction(1, 2), Fraction(1, 2), 1 - e)


def test_ceiling_arguments_are_checked():
    with pytest.raises(ValueError, match="task: expected one of"):
        bayes_ceilings("emotion")
    with pytest.raises(ValueError, match="label_noise"):
        bayes_ceilings("sentiment", 0.7)


def test_sentiment_rule_is_the_clipped_polarity_sum():
    table = [[clean_label("sentiment", t, i, 0) for i in range(3)] for t in range(3)]
    assert table == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]


def test_determinism_order_independence_and_seed():
    a = SyntheticDataset("dev", size=40, seed=3, tasks=["sentiment", "match"])
    b = SyntheticDataset("dev", size=40, seed=3, tasks=["sentiment", "match"])
    late = b[17]  # random access first: items depend only on (seed, split, index)
    first = [a[i] for i in range(40)]
    assert late["text"] == first[17]["text"] and late["labels"] == first[17]["labels"]
    assert np.array_equal(np.asarray(late["image"]), np.asarray(first[17]["image"]))
    assert [s["text"] for s in first] == [b[i]["text"] for i in range(40)]
    other = SyntheticDataset("dev", size=40, seed=4)
    assert [s["text"] for s in first] != [other[i]["text"] for i in range(40)]
    test_split = SyntheticDataset("test", size=40, seed=3)
    assert [s["text"] for s in first] != [test_split[i]["text"] for i in range(40)]
    # choosing tasks only selects labels, it never changes the items
    only_match = SyntheticDataset("dev", size=40, seed=3, tasks=["match"])
    assert [only_match[i]["labels"]["match"] for i in range(40)] == [s["labels"]["match"] for s in first]


def test_sample_format_sizes_and_vocabulary():
    ds = SyntheticDataset("train", size=25, image_size=48)
    assert len(ds) == 25 and ds.num_classes == {"sentiment": 3}
    sample = ds[-1]
    assert sample["id"] == "synthetic-train-000024"
    assert sample["image"].size == (48, 48) and sample["image"].mode == "RGB"
    assert set(sample["labels"]) == {"sentiment"}
    words = {w for i in range(len(ds)) for w in ds[i]["text"].split(" ")}
    assert words <= set(SYNTHETIC_VOCABULARY)
    assert [len(SyntheticDataset(s)) for s in ("train", "dev", "test")] == [2400, 600, 600]
    with pytest.raises(IndexError):
        ds[25]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "valid"}, "split: expected one of"),
        ({"size": 0}, "size: expected a positive int"),
        ({"image_size": 8}, "image_size: expected an int >= 16"),
        ({"tasks": ["emotion"]}, r"unknown task\(s\) \['emotion'\]"),
        ({"label_noise": -0.1}, "label_noise"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticDataset(**kwargs)


def test_factors_are_balanced_and_noise_is_exact():
    n = 900
    ds = SyntheticDataset("train", size=n, seed=1, label_noise=0.1, tasks=["sentiment", "match"])
    items = [ds.item(i) for i in range(n)]
    cells = collections.Counter((it.text_polarity, it.image_polarity, it.match) for it in items)
    assert set(cells.values()) == {n // 18}
    for task in ("sentiment", "match"):
        wrong = sum(
            ds.labels_of(i)[task] != clean_label(task, it.text_polarity, it.image_polarity, it.match)
            for i, it in enumerate(items)
        )
        assert wrong == round(0.1 * n)
    assert all((it.caption_shape == it.image_shape) == bool(it.match) for it in items)


# ---- empirical check: classifiers on features extracted from the rendered samples --------------


def _image_features(image) -> tuple[str, str]:
    """(colour, shape) read off the pixels: the shape is every pixel with a dark channel (the
    background is pale, ≥ 205 in every channel); its fill ratio of the bounding box tells
    square (1) / circle (π/4) / triangle (1/2); its mean colour the nearest palette colour."""
    pixels = np.asarray(image, dtype=np.float64)
    mask = pixels.min(axis=2) < 180
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    mean = pixels[mask].mean(axis=0)
    colour = min(COLOUR_RGB, key=lambda c: np.sum((np.array(COLOUR_RGB[c]) - mean) ** 2))
    return colour, shape


def _features(ds: SyntheticDataset):
    text_rows, image_rows, labels = [], [], collections.defaultdict(list)
    for i in range(len(ds)):
        sample = ds[i]
        text_rows.append(sample["text"].split(" "))
        image_rows.append(_image_features(sample["image"]))
        for task, y in sample["labels"].items():
            labels[task].append(y)
    return text_rows, image_rows, {t: np.array(v) for t, v in labels.items()}


def _one_hot(rows: list[list[str]], vocabulary: list[str]) -> np.ndarray:
    index = {v: k for k, v in enumerate(vocabulary)}
    out = np.zeros((len(rows), len(vocabulary)))
    for r, row in enumerate(rows):
        for token in row:
            out[r, index[token]] = 1.0
    return out


def test_unimodal_classifiers_stay_under_the_ceiling_and_fusion_beats_them():
    eps = 0.05
    train = SyntheticDataset("train", size=1800, seed=11, label_noise=eps, tasks=["sentiment", "match"])
    test = SyntheticDataset("test", size=1800, seed=11, label_noise=eps, tasks=["sentiment", "match"])
    tr_text, tr_img, tr_y = _features(train)
    te_text, te_img, te_y = _features(test)
    # every rendered picture is read back correctly (the visual cues really are coarse)
    assert [c for c, _ in te_img] == [test.item(i).colour for i in range(len(test))]
    assert [s for _, s in te_img] == [test.item(i).image_shape for i in range(len(test))]

    vocab = list(SYNTHETIC_VOCABULARY)
    cross = [f"{a}>{b}" for a in SHAPES for b in SHAPES]  # (caption shape, image shape) interaction feature
    img_vocab = [*COLOUR_RGB, *SHAPES]
    joint_img = [f"{c}/{s}" for c in COLOUR_RGB for s in SHAPES]

    def fit_score(x_train, y_train, x_test, y_test) -> float:
        return LogisticRegression(C=1.0, max_iter=2000).fit(x_train, y_train).score(x_test, y_test)

    def fused(text_rows, img_rows):
        shapes_in_text = [next(w for w in row if w in SHAPES) for row in text_rows]
        return np.hstack(
            [
                _one_hot(text_rows, vocab),
                _one_hot([list(r) for r in img_rows], img_vocab),
                _one_hot([[f"{a}>{b}"] for a, (_, b) in zip(shapes_in_text, img_rows)], cross),
            ]
        )

    n = len(test)
    for task in ("sentiment", "match"):
        ceil = bayes_ceilings(task, eps).as_dict()
        # unimodal: logistic regression on the bag of words / on the joint (colour, shape) one-hot
        acc_text = fit_score(_one_hot(tr_text, vocab), tr_y[task], _one_hot(te_text, vocab), te_y[task])
        acc_image = fit_score(
            _one_hot([["/".join(r)] for r in tr_img], joint_img),
            tr_y[task],
            _one_hot([["/".join(r)] for r in te_img], joint_img),
            te_y[task],
        )
        for acc, c in ((acc_text, ceil["text"]), (acc_image, ceil["image"])):
            sigma = math.sqrt(c * (1 - c) / n)
            assert acc <= c + 3 * sigma, (task, acc, c)
            assert acc >= c - 4 * sigma, (task, acc, c)  # and the ceiling is reachable (it is tight)
        acc_fused = fit_score(fused(tr_text, tr_img), tr_y[task], fused(te_text, te_img), te_y[task])
        print(f"{task}: text {acc_text:.4f} image {acc_image:.4f} fused {acc_fused:.4f} ceilings {ceil}")
        assert acc_fused >= ceil["fused"] - 3 * math.sqrt(0.05 * 0.95 / n), (task, acc_fused)
        assert acc_fused > max(ceil["text"], ceil["image"]) + 0.3
