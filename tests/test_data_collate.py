"""The classification collator (with a tiny fake processor) and the data-set registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import mmfuse
from mmfuse.core.config import ConfigError
from mmfuse.data import (
    SYNTHETIC_VOCABULARY,
    ClassificationCollator,
    SyntheticDataset,
    build_dataset,
    list_datasets,
)

VOCAB = {w: k for k, w in enumerate(["[PAD]", "[CLS]", "[SEP]", "[UNK]", *SYNTHETIC_VOCABULARY])}


class TinyProcessor:
    """Whitespace tokenizer over the synthetic vocabulary + 8×8 pixels in [0, 1]: the
    MultimodalProcessor interface, small enough to check every value."""

    def __call__(self, texts: list[str], images: list[Image.Image]) -> dict[str, torch.Tensor]:
        ids = [[1, *(VOCAB.get(w, 3) for w in t.split()), 2] for t in texts]
        width = max(map(len, ids))
        input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
        pixels = np.stack(
            [np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32) / 255 for im in images]
        )
        return {
            "input_ids": input_ids,
            "attention_mask": (input_ids != 0).long(),
            "pixel_values": torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
        }


def test_batches_from_the_synthetic_set():
    ds = SyntheticDataset("dev", size=10, tasks=["sentiment", "match"])
    loader = DataLoader(ds, batch_size=4, collate_fn=ClassificationCollator(TinyProcessor()))
    batches = list(loader)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]
    first = batches[0]
    assert set(first) == {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "labels",
    }  # no image_mask: all images real
    assert first["pixel_values"].shape == (4, 3, 8, 8) and first["pixel_values"].dtype == torch.float32
    assert first["labels"]["sentiment"].dtype == torch.long
    assert first["labels"]["sentiment"].tolist() == [ds.labels_of(i)["sentiment"] for i in range(4)]
    assert first["labels"]["match"].tolist() == [ds.labels_of(i)["match"] for i in range(4)]
    words = ds[0]["text"].split()
    assert first["input_ids"][0, 1 : 1 + len(words)].tolist() == [VOCAB[w] for w in words]
    assert first["attention_mask"][0].sum() == len(words) + 2


def test_worker_processes_give_the_same_batches():
    ds = SyntheticDataset("test", size=12, seed=7)
    collator = ClassificationCollator(TinyProcessor(), return_ids=True)
    serial = list(DataLoader(ds, batch_size=6, collate_fn=collator))
    parallel = list(DataLoader(ds, batch_size=6, collate_fn=collator, num_workers=2))
    for a, b in zip(serial, parallel):
        assert a["ids"] == b["ids"] and torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(a["labels"]["sentiment"], b["labels"]["sentiment"])
    assert serial[1]["ids"][0] == "synthetic-test-000006"


def test_text_only_samples_get_a_blank_image_and_an_image_mask():
    image = Image.new("RGB", (16, 16), (255, 255, 255))
    samples = [
        {"id": "a", "text": "lovely square", "image": image, "labels": {"image_adds": 1}},
        {"id": "b", "text": "", "image": None, "labels": {"image_adds": 0}},
    ]
    batch = ClassificationCollator(TinyProcessor(), return_ids=True)(samples)
    assert batch["image_mask"].tolist() == [True, False] and batch["image_mask"].dtype == torch.bool
    assert torch.all(batch["pixel_values"][0] == 1) and torch.all(
        batch["pixel_values"][1] == 0
    )  # black placeholder
    assert batch["ids"] == ["a", "b"] and batch["labels"]["image_adds"].tolist() == [1, 0]
    only_text = ClassificationCollator(TinyProcessor())([samples[1], samples[1]])
    assert only_text["image_mask"].tolist() == [False, False] and only_text["pixel_values"].shape == (
        2,
        3,
        8,
        8,
    )


def test_task_selection_unlabelled_inputs_and_dropped_items():
    ds = SyntheticDataset("dev", size=3, tasks=["sentiment", "match"])
    samples = [ds[0], None, ds[1]]
    collator = ClassificationCollator(TinyProcessor(), tasks=["match"])
    batch = collator(samples)
    assert set(batch["labels"]) == {"match"} and batch["input_ids"].shape[0] == 2 and collator.dropped == 1
    assert collator([None, None]) is None and collator.dropped == 3
    unlabelled = [{"id": "x", "text": "happy circle", "image": ds[2]["image"]}]
    assert "labels" not in ClassificationCollator(TinyProcessor())(unlabelled)


def test_collator_errors():
    ds = SyntheticDataset("dev", size=2)
    good = [ds[0], ds[1]]
    collate = ClassificationCollator(TinyProcessor())
    with pytest.raises(TypeError, match="processor: expected a callable"):
        ClassificationCollator("bert")
    with pytest.raises(TypeError, match="tasks: expected a list of task names, got the string 'sentiment'"):
        ClassificationCollator(TinyProcessor(), tasks="sentiment")
    with pytest.raises(ValueError, match="sample 'synthetic-dev-000001' has no 'labels' but others"):
        collate([good[0], {k: v for k, v in good[1].items() if k != "labels"}])
    with pytest.raises(
        ValueError, match=r"labels\['sentiment'\] must be a class index \(int >= 0\), got 1.0"
    ):
        collate([good[0], {**good[1], "labels": {"sentiment": 1.0}}])
    with pytest.raises(ValueError, match=r"labels\['match'\] must be a class index"):
        ClassificationCollator(TinyProcessor(), tasks=["match"])(good)
    with pytest.raises(TypeError, match="expected raw samples with 'text' and 'image' keys"):
        collate([{"id": "1", "text": "x"}])
    with pytest.raises(TypeError, match="sample '1': 'text' must be a str, got list"):
        collate([{"id": "1", "text": ["x"], "image": None}])
    with pytest.raises(
        ValueError, match=r"processor output 'pixel_values' has shape \(1, 3\), expected batch size 2"
    ):
        ClassificationCollator(lambda t, i: {"pixel_values": torch.zeros(1, 3)})(good)
    with pytest.raises(TypeError, match="processor returned list, expected a dict of tensors"):
        ClassificationCollator(lambda t, i: [t, i])(good)
    labels_sample = {**good[0], "labels": {"sentiment": np.int64(2)}}  # numpy integers are fine
    assert collate([labels_sample])["labels"]["sentiment"].tolist() == [2]


def test_registry():
    assert list_datasets() == [
        "msed", "mvsa-json", "mvsa-multiple", "mvsa-single", "synthetic", "trc", "twitter2015", "twitter2017"
    ]
    ds = build_dataset("synthetic", "test", test_size=9, seed=2, tasks=["match"], image_size=32)
    assert isinstance(ds, SyntheticDataset) and len(ds) == 9 and ds[0]["image"].size == (32, 32)
    assert set(ds[0]["labels"]) == {"match"}
    with pytest.raises(ConfigError, match=r"unknown data set 'mvsa_single' \(did you mean 'mvsa-single'\?\)"):
        build_dataset("mvsa_single", "train")
    with pytest.raises(
        ConfigError, match=r"synthetic.train_sise: unknown key \(did you mean 'train_size'\?\)"
    ):
        build_dataset("synthetic", "train", train_sise=10)
    with pytest.raises(ConfigError, match="synthetic.label_noise: expected float, got str"):
        build_dataset("synthetic", "train", label_noise="0.1")
    with pytest.raises(ValueError, match="synthetic: the data set is generated, data_dir must not be given"):
        build_dataset("synthetic", "train", data_dir="/tmp")
    with pytest.raises(ValueError, match="synthetic: split: expected 'train', 'dev' or 'test', got 'val'"):
        build_dataset("synthetic", "val")

    with pytest.raises(ConfigError, match=r"unknown data set 'MVSA-Single' \(did you mean 'mvsa-single'\?\)"):
        build_dataset("MVSA-Single", "train")  # suggestions ignore case

    def build_tiny(split: str, data_dir: str | None = None, *, size: int = 3) -> SyntheticDataset:
        return SyntheticDataset(split, size=size)

    class TinyPlugin:  # data sets are a registry kind: a plugin adds one like any component
        @mmfuse.hookimpl
        def mmfuse_datasets(self):
            return {"tiny-test": build_tiny}

    mmfuse.register_plugin(TinyPlugin(), name="tiny-datasets")
    try:
        assert "tiny-test" in list_datasets()
        assert len(build_dataset("tiny-test", "dev", size=4)) == 4
        assert mmfuse.get_component("dataset", "tiny-test").plugin == "tiny-datasets"

        class Clash:
            @mmfuse.hookimpl
            def mmfuse_datasets(self):
                return {"tiny-test": lambda split, data_dir: None}

        with pytest.raises(mmfuse.DuplicateComponentError, match="dataset 'tiny-test' is registered by two plugins"):
            mmfuse.register_plugin(Clash(), name="clash")
    finally:
        mmfuse.unregister_plugin("tiny-datasets")
    assert "tiny-test" not in list_datasets()
