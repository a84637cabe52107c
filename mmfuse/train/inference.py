"""Using a trained model folder: load it with its task, read prediction inputs, evaluate, predict.

A *trained model folder* is ``<output_dir>/model`` or any ``checkpoints/checkpoint-<step>``:
``model.safetensors`` + ``config.json`` (:func:`mmfuse.models.checkpoint.save_pretrained`) and
``task.json`` (task name, label schema, the data set it was trained on). ``mmfuse eval`` and
``mmfuse predict`` are thin wrappers around :func:`load_trained` and :func:`JsonlInputs`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from mmfuse.models.checkpoint import CheckpointError, load_pretrained, resolve_model_dir
from mmfuse.data.datasets.base import OnBadImage, SkippedItem, check_on_bad_image
from mmfuse.data.images import BadImageError, check_image, load_image
from mmfuse.train.checkpointing import TASK_NAME
from mmfuse.tasks.base import LabelSchema, TrainTask, get_task
from mmfuse.utils.io import read_json_file, read_text_file


@dataclasses.dataclass
class TrainedModel:
    """A loaded model folder: the model, its task and label schema, and ``task.json`` as read."""

    model: nn.Module
    task: TrainTask
    label_schema: LabelSchema
    info: dict[str, Any]
    path: Path


def load_trained(path: str | os.PathLike[str], map_location: str = "cpu") -> TrainedModel:
    """Load a trained model folder (or a training output_dir) with its task and label schema."""
    directory = resolve_model_dir(path)
    task_file = directory / TASK_NAME
    if not task_file.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(directory)!r}: no {TASK_NAME} (written by the trainer); a bare save_pretrained "
            "folder has no label names — evaluate it from Python with Trainer(..., label_schema=...)"
        )
    info = read_json_file(task_file, "checkpoint file")
    if not isinstance(info, dict) or "labels" not in info:
        raise CheckpointError(f"checkpoint file {str(task_file)!r}: expected an object with 'task' and 'labels'")
    task = get_task(info.get("task", "classification"))
    model = load_pretrained(directory, map_location=map_location)
    return TrainedModel(model, task, info["labels"], info, directory)


class JsonlInputs(Dataset):
    """Prediction inputs from a JSON-lines file: one ``{"text": str, "image": path}`` per line.

    ``image`` paths are relative to the file's folder (absolute paths work too); ``"id"`` is
    optional (default: the 1-based line number). Bad images follow the data sets' policy:
    ``"error"`` raises :class:`~mmfuse.data.BadImageError` naming the file and line when the image
    is read, ``"skip"`` checks every image up front and leaves bad lines out with one warning
    (they are listed in :attr:`skipped`).
    """

    def __init__(self, path: str | os.PathLike[str], on_bad_image: OnBadImage = "error") -> None:
        self.path = Path(path)
        self.on_bad_image = check_on_bad_image(on_bad_image)
        self.items: list[tuple[str, str, Path]] = []
        lines = read_text_file(self.path, "inputs").split("\n")  # never splitlines(): U+2028 is text
        for number, line in enumerate(lines, start=1):
            line = line.removesuffix("\r")
            if not line.strip():
                continue
            where = f"{self.path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise ValueError(f"{where}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected an object {{\"text\": ..., \"image\": ...}}, got {type(row).__name__}")
            for key in ("text", "image"):
                if not isinstance(row.get(key), str):
                    raise ValueError(f"{where}: {key!r} must be a string, got {row.get(key)!r}")
            if not row["image"].strip():
                raise ValueError(f"{where}: 'image' is empty")
            item_id = row.get("id", number)
            if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
                raise ValueError(f"{where}: 'id' must be a string or an integer, got {item_id!r}")
            image = Path(row["image"])
            self.items.append((str(item_id), row["text"], image if image.is_absolute() else self.path.parent / image))
        if not self.items:
            raise ValueError(f"inputs: {str(self.path)!r} has no input lines")
        self.skipped: list[SkippedItem] = []
        if self.on_bad_image == "skip":
            kept = []
            for item in self.items:
                reason = check_image(item[2])
                if reason is None:
                    kept.append(item)
                else:
                    self.skipped.append(SkippedItem(item[0], item[2], reason))
            self.items = kept
            if not self.items:
                raise ValueError(f"inputs: {str(self.path)!r}: every line has a missing or corrupt image "
                                 f"(e.g. {self.skipped[0].path}: {self.skipped[0].reason})")
            if self.skipped:
                warnings.warn(f"inputs: skipping {len(self.skipped)} line(s) with missing or corrupt images: "
                              + "; ".join(f"{s.path} ({s.reason})" for s in self.skipped[:3]), stacklevel=2)
        else:  # fail before any prediction when a file is plainly missing (corrupt ones fail when read)
            for item_id, _, image_path in self.items:
                if not image_path.is_file():
                    raise BadImageError(image_path, f"file does not exist (input {item_id!r} of {self.path}; "
                                        "pass on_bad_image='skip' to leave such lines out)")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item_id, text, image_path = self.items[index]
        try:
            image = load_image(image_path)
        except BadImageError as exc:
            raise BadImageError(exc.path, f"{exc.reason} (input {item_id!r} of {self.path}; "
                                "pass on_bad_image='skip' to leave such lines out)") from None
        return {"id": item_id, "text": text, "image": image}
