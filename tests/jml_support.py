"""Test helpers for JML: a handful of tweets and their batches (made by the JMASACollator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from mmfuse.data.collators.jmasa import JMASACollator

#: (words, [(start, end inclusive, polarity)]) — a few tweets with multi-word, adjacent and mixed aspects
TWEETS: list[tuple[list[str], list[tuple[int, int, int]]]] = [
    ("RT @ ltsChuckBass : Chuck Bass is everything # MCM".split(), [(4, 5, 2), (8, 9, 1)]),
    ("Millions For Trayvon September 7 - Shut Down New York City".split(), [(0, 2, 1), (8, 10, 0)]),
    ("LeBron James and Johnny Football Browns fans".split(), [(0, 1, 1), (3, 3, 1), (4, 5, 2)]),
    ("Great night with Obama in Chicago".split(), [(3, 3, 2), (5, 5, 1)]),
    ("Apple stock falls after weak iPhone sales".split(), [(0, 0, 0), (6, 6, 0)]),
    ("Watching Arsenal tonight".split(), [(1, 1, 1)]),
]


def make_span_batch(tokenizer: Any, tweets: Sequence[tuple[list[str], list[tuple[int, int, int]]]],
                    image_size: int | None = None, labels: bool = True, seed: int = 0) -> dict[str, Any]:
    """A JML batch for ``tweets`` (and random ``pixel_values`` of ``image_size`` when given)."""
    samples = [{"words": list(words), **({"aspects": list(aspects)} if labels else {})} for words, aspects in tweets]
    batch = JMASACollator(tokenizer, max_length=64)(samples)
    if image_size is not None:
        generator = torch.Generator().manual_seed(seed)
        batch["pixel_values"] = torch.randn(len(tweets), 3, image_size, image_size, generator=generator)
    return batch


def write_twitter_folder(folder: Path, splits: dict[str, Sequence[int]], image_dir: Path | None = None) -> Path:
    """A TomBERT-format Twitter folder (``train/dev/test.tsv``: one row per aspect, ``$T$`` marking it)
    holding ``TWEETS[i]`` for the given indices of each split; with ``image_dir``, one small JPEG
    per tweet (``<image_id>.jpg``, a colour per tweet)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for split, indices in splits.items():
        lines = ["index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"]
        for i in indices:
            words, aspects = TWEETS[i]
            image_id = f"{1000 + i}.jpg"
            for start, end, polarity in aspects:
                masked = " ".join(words[:start] + ["$T$"] + words[end + 1:])
                lines.append(f"{len(lines)}\t{polarity}\t{image_id}\t{masked}\t{' '.join(words[start:end + 1])}")
            if image_dir is not None:
                image_dir.mkdir(parents=True, exist_ok=True)
                colour = (40 * i % 256, 255 - 30 * i % 256, 90 + 20 * i % 166)
                Image.new("RGB", (80, 64), colour).save(image_dir / image_id)
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
