"""An embedded synthetic image–text data set whose labels need **both** modalities.

Nothing is shipped: every item is generated from ``(seed, split, index)``, so the same options
always give the same samples, in any order, in any DataLoader worker.

Each item is a small picture of one large, flat-coloured shape on a pale background and a short
caption such as ``"look at this lovely triangle today"``. Hidden, independent and balanced
factors drive both:

* **text polarity** ``t`` ∈ {negative, neutral, positive}: the caption's sentiment word
  (4 synonyms per polarity, see :data:`SENTIMENT_WORDS`);
* **image polarity** ``i`` ∈ {negative, neutral, positive}: the shape's colour
  (red/purple, blue/gray, green/yellow, see :data:`COLOURS_BY_POLARITY`);
* **claim match** ``m`` ∈ {no, yes}: whether the shape word in the caption names the shape drawn.

Distractors that carry no label information: the opener and trailing word of the caption, the
shape itself for ``sentiment``, the colour within its polarity group, the background tint, the
shape's size (45–80 % of the side) and position.

Tasks (``labels``):

* ``sentiment`` (3 classes ``negative, neutral, positive``): the clipped sum of the two polarities,
  ``clip((t-1) + (i-1), -1, 1) + 1``. Either modality alone is informative but not sufficient.
* ``match`` (2 classes ``no, yes``): ``m``. Neither modality alone says anything about it: it
  needs a cross-modal comparison (the caption's shape word vs the drawn shape).

With label-noise rate ``ε`` (default ``0.05``), exactly ``round(ε·n)`` items of a split get a
label drawn uniformly from the *other* classes, independently per task. The Bayes-optimal
accuracies (computed exactly by :func:`bayes_ceilings`, by enumerating the generative
distribution with rational arithmetic) are:

==============  ==========================  =========================  ===========
task            text only                   image only                 text+image
==============  ==========================  =========================  ===========
``sentiment``   5/9 − ε/3  (0.5389 @ 0.05)  5/9 − ε/3  (0.5389)        1 − ε (0.95)
``match``       1/2                         1/2                        1 − ε (0.95)
==============  ==========================  =========================  ===========

So a text-only or image-only model cannot beat 0.539 on ``sentiment`` (or 0.5 on ``match``)
beyond sampling noise, while a model that fuses both can reach 0.95. The sentiment rule is
additive, so late fusion can learn it; ``match`` needs an interaction between the modalities.

The visual cues are coarse (one large shape, six well-separated colours) and captions come from
a vocabulary of :data:`SYNTHETIC_VOCABULARY` lower-case words (give it to an offline tokenizer),
so a small model learns the set in a few CPU minutes. Images are generated at ``image_size``
(default 64) and the model's processor resizes them as it would any photo.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw

from mmfuse.data.datasets.base import ClassificationDataset, Sample, select_tasks

SENTIMENT_CLASSES: tuple[str, ...] = ("negative", "neutral", "positive")
MATCH_CLASSES: tuple[str, ...] = ("no", "yes")
TASKS: dict[str, tuple[str, ...]] = {"sentiment": SENTIMENT_CLASSES, "match": MATCH_CLASSES}

#: Caption sentiment words by text polarity (0 negative, 1 neutral, 2 positive).
SENTIMENT_WORDS: dict[int, tuple[str, ...]] = {
    0: ("awful", "terrible", "sad", "ugly"),
    1: ("plain", "ordinary", "average", "simple"),
    2: ("lovely", "great", "wonderful", "happy"),
}
#: Shape colours by image polarity (0 negative, 1 neutral, 2 positive).
COLOURS_BY_POLARITY: dict[int, tuple[str, ...]] = {
    0: ("red", "purple"),
    1: ("blue", "gray"),
    2: ("green", "yellow"),
}
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "purple": (130, 40, 170),
    "blue": (40, 80, 220),
    "gray": (100, 100, 100),
    "green": (30, 160, 60),
    "yellow": (235, 195, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
OPENERS: tuple[str, ...] = ("look at this", "check out this", "here is this", "i saw this", "behold this")
SUFFIXES: tuple[str, ...] = ("", "today", "again", "here", "now")

#: Every word a caption can contain (lower case, sorted); captions are these words joined by spaces.
SYNTHETIC_VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        {
            word
            for phrase in (
                *OPENERS,
                *SUFFIXES,
                *SHAPES,
                *itertools.chain.from_iterable(SENTIMENT_WORDS.values()),
            )
            for word in phrase.split()
        }
    )
)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
_SPLIT_CODES = {"train": 0, "dev": 1, "test": 2}
DEFAULT_SIZES: dict[str, int] = {"train": 2400, "dev": 600, "test": 600}
DEFAULT_LABEL_NOISE = 0.05
DEFAULT_IMAGE_SIZE = 64
_N_CELLS = 3 * 3 * 2  # (text polarity, image polarity, match)


def clean_label(task: str, text_polarity: int, image_polarity: int, match: int) -> int:
    """The noise-free label of ``task`` for the hidden factors (polarities in {0, 1, 2})."""
    if task == "sentiment":
        return int(np.clip(text_polarity + image_polarity - 2, -1, 1)) + 1
    if task == "match":
        return int(match)
    raise ValueError(f"task: expected one of {list(TASKS)}, got {task!r}")


@dataclasses.dataclass(frozen=True)
class Ceilings:
    """Bayes-optimal accuracies of a text-only, an image-only and a text+image classifier."""

    task: str
    label_noise: Fraction
    text: Fraction
    image: Fraction
    fused: Fraction

    def as_dict(self) -> dict[str, float]:
        return {"text": float(self.text), "image": float(self.image), "fused": float(self.fused)}


def bayes_ceilings(task: str = "sentiment", label_noise: float = DEFAULT_LABEL_NOISE) -> Ceilings:
    """Exact Bayes ceilings of ``task`` under the generative model (see the module docstring).

    Enumerates every combination of the label-relevant observables — text: (sentiment polarity,
    caption shape word); image: (colour, drawn shape) — with its probability as a fraction and
    sums ``max_y P(observation, y)`` over observations. The other distractors are independent of
    everything and cannot change a Bayes decision, so they are left out of the enumeration.
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {list(TASKS)}, got {task!r}")
    eps = _check_noise(label_noise)
    n_classes = len(TASKS[task])
    joint_text: dict[tuple, list[Fraction]] = {}
    joint_image: dict[tuple, list[Fraction]] = {}
    joint_fused: dict[tuple, list[Fraction]] = {}
    third, half = Fraction(1, 3), Fraction(1, 2)
    for t, i, m, image_shape in itertools.product(range(3), range(3), range(2), range(3)):
        caption_shapes = [image_shape] if m else [s for s in range(3) if s != image_shape]
        y0 = clean_label(task, t, i, m)
        for colour in COLOURS_BY_POLARITY[i]:
            for caption_shape in caption_shapes:
                p = (
                    third
                    * third
                    * half
                    * third
                    * Fraction(1, len(COLOURS_BY_POLARITY[i]))
                    * Fraction(1, len(caption_shapes))
                )
                for y in range(n_classes):
                    p_y = p * ((1 - eps) if y == y0 else eps / (n_classes - 1))
                    for table, key in (
                        (joint_text, (t, caption_shape)),
                        (joint_image, (colour, image_shape)),
                        (joint_fused, (t, caption_shape, colour, image_shape)),
                    ):
                        table.setdefault(key, [Fraction(0)] * n_classes)[y] += p_y

    def ceiling(table: dict[tuple, list[Fraction]]) -> Fraction:
        return sum((max(row) for row in table.values()), Fraction(0))

    return Ceilings(task, eps, ceiling(joint_text), ceiling(joint_image), ceiling(joint_fused))


def _check_noise(label_noise: float) -> Fraction:
    if (
        isinstance(label_noise, bool)
        or not isinstance(label_noise, (int, float))
        or not 0 <= label_noise < 0.5
    ):
        raise ValueError(f"label_noise: expected a number in [0, 0.5), got {label_noise!r}")
    return Fraction(str(label_noise))  # 0.05 -> 1/20 exactly


@dataclasses.dataclass(frozen=True)
class SyntheticItem:
    """Everything that determines one synthetic sample (hidden factors + rendering choices)."""

    text_polarity: int
    image_polarity: int
    match: int
    colour: str
    image_shape: str
    caption_shape: str
    caption: str
    background: tuple[int, int, int]
    box: tuple[int, int, int]  # x0, y0, side in pixels


class SyntheticDataset(ClassificationDataset):
    """One split of the synthetic set; see the module docstring for the generative model.

    Args:
        split: ``"train"``, ``"dev"`` or ``"test"`` (each split is an independent draw).
        size: number of items (default: 2400 / 600 / 600).
        seed: global seed; with ``split`` and ``size`` it fixes every item.
        image_size: side of the square RGB images in pixels (≥ 16).
        label_noise: fraction ``ε`` of items per task whose label is replaced by another class.
        tasks: which of ``sentiment``, ``match`` to expose in ``labels`` (default: ``["sentiment"]``).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        size: int | None = None,
        seed: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        label_noise: float = DEFAULT_LABEL_NOISE,
        tasks: Sequence[str] | None = ("sentiment",),
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
        size = DEFAULT_SIZES[split] if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size: expected a positive int, got {size!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
            raise ValueError(f"image_size: expected an int >= 16, got {image_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        self.name = "synthetic"
        self.split = split
        self.size = size
        self.seed = seed
        self.image_size = image_size
        self.label_noise = float(_check_noise(label_noise))
        self.tasks = select_tasks(tasks, TASKS, "tasks")

        rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split]]))
        # Exactly balanced factors: every (t, i, m) cell n // 18 times, the remainder in distinct cells.
        cells = np.array(list(itertools.product(range(3), range(3), range(2))), dtype=np.int64)
        assignment = np.concatenate(
            [
                np.repeat(np.arange(_N_CELLS), size // _N_CELLS),
                rng.choice(_N_CELLS, size % _N_CELLS, replace=False),
            ]
        )
        self._factors = cells[rng.permutation(assignment)]  # [size, 3]
        self._labels: dict[str, np.ndarray] = {}
        for task, classes in TASKS.items():  # every task is generated, so `tasks` never changes the items
            n_classes = len(classes)
            labels = np.array([clean_label(task, *f) for f in self._factors], dtype=np.int64)
            flipped = rng.choice(size, round(self.label_noise * size), replace=False)
            labels[flipped] = (labels[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
            self._labels[task] = labels

    def __len__(self) -> int:
        return self.size

    def _index(self, index: int) -> int:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        return index % self.size

    def labels_of(self, index: int) -> dict[str, int]:
        index = self._index(index)
        return {task: int(self._labels[task][index]) for task in self.tasks}

    def item(self, index: int) -> SyntheticItem:
        """The hidden factors and rendering choices of item ``index`` (no image is drawn)."""
        index = self._index(index)
        t, i, m = (int(v) for v in self._factors[index])
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_CODES[self.split], 1 + index]))
        colour = COLOURS_BY_POLARITY[i][rng.integers(len(COLOURS_BY_POLARITY[i]))]
        shape = int(rng.integers(len(SHAPES)))
        caption_shape = shape if m else int(rng.choice([s for s in range(len(SHAPES)) if s != shape]))
        words = [
            OPENERS[rng.integers(len(OPENERS))],
            SENTIMENT_WORDS[t][rng.integers(len(SENTIMENT_WORDS[t]))],
            SHAPES[caption_shape],
            SUFFIXES[rng.integers(len(SUFFIXES))],
        ]
        background = tuple(int(c) for c in rng.integers(205, 256, 3))
        side = round(rng.uniform(0.45, 0.8) * self.image_size)
        x0, y0 = (int(v) for v in rng.integers(0, self.image_size - side + 1, 2))
        return SyntheticItem(
            t,
            i,
            m,
            colour,
            SHAPES[shape],
            SHAPES[caption_shape],
            " ".join(w for w in words if w),
            background,
            (x0, y0, side),
        )  # type: ignore[arg-type]

    def render(self, item: SyntheticItem) -> Image.Image:
        """Draw ``item``'s picture: one flat shape on a pale background."""
        image = Image.new("RGB", (self.image_size, self.image_size), item.background)
        draw = ImageDraw.Draw(image)
        x0, y0, side = item.box
        x1, y1 = x0 + side - 1, y0 + side - 1
        fill = COLOUR_RGB[item.colour]
        if item.image_shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif item.image_shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
        return image

    def __getitem__(self, index: int) -> Sample:
        index = self._index(index)
        item = self.item(index)
        return {
            "id": f"synthetic-{self.split}-{index:06d}",
            "text": item.caption,
            "image": self.render(item),
            "labels": self.labels_of(index),
        }

    def ceilings(self) -> dict[str, Ceilings]:
        """:func:`bayes_ceilings` of each exposed task at this data set's label noise."""
        return {task: bayes_ceilings(task, self.label_noise) for task in self.tasks}


def build_synthetic(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    train_size: int = DEFAULT_SIZES["train"],
    dev_size: int = DEFAULT_SIZES["dev"],
    test_size: int = DEFAULT_SIZES["test"],
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    label_noise: float = DEFAULT_LABEL_NOISE,
    tasks: list[str] | None = None,
) -> SyntheticDataset:
    """One split of the embedded synthetic set (no files; ``data_dir`` must not be given)."""
    if data_dir is not None:
        raise ValueError(
            f"synthetic: the data set is generated, data_dir must not be given (got {str(data_dir)!r})"
        )
    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    if split not in sizes:
        raise ValueError(f"synthetic: split: expected 'train', 'dev' or 'test', got {split!r}")
    return SyntheticDataset(
        split,
        size=sizes[split],
        seed=seed,
        image_size=image_size,
        label_noise=label_noise,
        tasks=["sentiment"] if tasks is None else tasks,
    )
