"""Turn a list of raw samples into a model batch with the model's processor.

The processor is the model's ``MultimodalProcessor`` (``model.get_processor(train=...)``) or any
callable ``processor(texts: list[str], images: list[PIL.Image]) -> dict[str, Tensor]`` returning
``input_ids`` [B, L], ``attention_mask`` [B, L] (optionally ``token_type_ids``) and
``pixel_values`` [B, 3, H, W]. The collator adds ``labels``: ``{task: LongTensor [B]}``.

Text-only samples (``"image": None``, e.g. TRC without an image folder) are given a blank (black)
placeholder image so the processor and the model see the usual shapes, and the batch gets
``image_mask``: BoolTensor [B], ``True`` where the image is real. ``image_mask`` is present only in
batches that contain at least one text-only sample, so batches of ordinary image+text data are
exactly the standard batch. Models may use it to ignore placeholder images.

``None`` items (an image that broke after the data set validated it, ``on_bad_image="skip"``)
are dropped and counted in :attr:`ClassificationCollator.dropped`; if a whole batch is dropped the
collator returns ``None``, which training / evaluation loops skip.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image

Processor = Callable[[list[str], list[Image.Image]], Mapping[str, Any]]


class ClassificationCollator:
    """``collate(samples) -> batch`` for :class:`torch.utils.data.DataLoader` (``collate_fn=``).

    Args:
        processor: ``processor(texts, images) -> dict`` (see the module docstring).
        tasks: label keys to put in ``batch["labels"]``; default: the keys of the first sample.
            Samples without ``"labels"`` (prediction inputs) give a batch without ``labels``.
        blank_image_size: side of the black placeholder used for text-only samples; the
            processor resizes it like any image.
        return_ids: also put ``batch["ids"]``, the list of sample ids (for predictions).
    """

    def __init__(
        self,
        processor: Processor,
        *,
        tasks: Sequence[str] | None = None,
        blank_image_size: int = 32,
        return_ids: bool = False,
    ) -> None:
        if not callable(processor):
            raise TypeError(
                f"processor: expected a callable processor(texts, images), got {type(processor).__name__}"
            )
        if isinstance(tasks, str):
            raise TypeError(f"tasks: expected a list of task names, got the string {tasks!r}")
        if (
            isinstance(blank_image_size, bool)
            or not isinstance(blank_image_size, int)
            or blank_image_size < 1
        ):
            raise ValueError(f"blank_image_size: expected a positive int, got {blank_image_size!r}")
        self.processor = processor
        self.tasks = None if tasks is None else list(tasks)
        self.blank_image_size = blank_image_size
        self.return_ids = return_ids
        self.dropped = 0

    def blank_image(self) -> Image.Image:
        return Image.new("RGB", (self.blank_image_size, self.blank_image_size))

    def __call__(self, samples: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
        kept = [s for s in samples if s is not None]
        self.dropped += len(samples) - len(kept)
        if not kept:
            return None
        for s in kept:
            if not isinstance(s, Mapping) or "text" not in s or "image" not in s:
                raise TypeError(
                    f"collate: expected raw samples with 'text' and 'image' keys, got {str(s)[:80]!r}"
                )
            if not isinstance(s["text"], str):
                raise TypeError(
                    f"collate: sample {s.get('id')!r}: 'text' must be a str, got {type(s['text']).__name__}"
                )
        texts = [s["text"] for s in kept]
        has_image = [s["image"] is not None for s in kept]
        images = [s["image"] if s["image"] is not None else self.blank_image() for s in kept]
        out = self.processor(texts, images)
        if not isinstance(out, Mapping):
            raise TypeError(f"processor returned {type(out).__name__}, expected a dict of tensors")
        batch = dict(out)
        size = len(kept)
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and (value.dim() == 0 or value.shape[0] != size):
                raise ValueError(
                    f"processor output {key!r} has shape {tuple(value.shape)}, "
                    f"expected batch size {size} first"
                )
        if "labels" in batch:
            raise ValueError("processor output already has a 'labels' key; the collator adds labels itself")
        labels = self._labels(kept)
        if labels is not None:
            batch["labels"] = labels
        if not all(has_image):
            batch["image_mask"] = torch.tensor(has_image, dtype=torch.bool)
        if self.return_ids:
            batch["ids"] = [str(s.get("id", "")) for s in kept]
        return batch

    def _labels(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor] | None:
        with_labels = ["labels" in s for s in samples]
        if not any(with_labels):
            return None
        if not all(with_labels):
            missing = next(s.get("id") for s in samples if "labels" not in s)
            raise ValueError(f"collate: sample {missing!r} has no 'labels' but others in the batch do")
        tasks = self.tasks if self.tasks is not None else list(samples[0]["labels"])
        out = {}
        for task in tasks:
            values = []
            for s in samples:
                value = s["labels"].get(task)
                if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                    raise ValueError(
                        f"collate: sample {s.get('id')!r}: labels[{task!r}] must be a class index "
                        f"(int >= 0), got {value!r}"
                    )
                values.append(int(value))
            out[task] = torch.tensor(values, dtype=torch.long)
        return out
