"""Training logs: one JSON object per line (``<output_dir>/logs/train.jsonl``) and TensorBoard.

Records have a ``type`` (``"train"``, ``"eval"``, ``"final"`` — the metrics of the exported model
— and ``"info"``) and the optimizer ``step``; train and eval records also the (fractional) ``epoch``. Training records carry ``loss`` (the weighted total that is
back-propagated), one ``losses/<name>`` entry per named component of ``output.losses`` (task
losses and auxiliary ITC / ITM losses, unweighted), ``lr``, ``grad_norm`` and throughput;
evaluation records carry the task's metrics. TensorBoard gets the same numbers as scalars named
``<type>/<key>``. Only rank 0 writes.

Every line is standard JSON: a non-finite number (a NaN loss, an infinite gradient norm) is
written as ``null`` (TensorBoard still gets the float). A line cut short by a killed process is
removed when the log is opened again, so the file stays valid JSON lines.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmfuse.utils.io import WriteError, json_dumps, read_text_file

LOGS_DIR = "logs"
JSONL_NAME = "train.jsonl"
TENSORBOARD_DIR = "tensorboard"


class RunLogger:
    """Append records to the JSONL log and mirror numbers to TensorBoard (no-op when disabled)."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.log_dir = Path(output_dir) / LOGS_DIR
        self.writer = None
        self._file = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(self.log_dir / JSONL_NAME)
        self._file = open(self.log_dir / JSONL_NAME, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir / TENSORBOARD_DIR))

    def log(self, kind: str, step: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Write one record ``{"type": kind, "step": step, **values}`` and return it."""
        record = {"type": kind, "step": step, **values}
        if not self.enabled:
            return record
        assert self._file is not None
        try:
            self._file.write(json_dumps(record, sort_keys=False) + "\n")
            self._file.flush()
        except OSError as exc:  # a full disk: name the file
            raise WriteError(self.log_dir / JSONL_NAME, exc) from None
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, numbers.Real) and not isinstance(value, bool) and key != "epoch" \
                        and (math.isfinite(value) or key.startswith(("loss", "losses/", "grad_norm"))):
                    self.writer.add_scalar(f"{kind}/{key}", float(value), global_step=step)
            self.writer.flush()
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_log(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a JSONL log (``kind`` filters by ``type``); a folder means its ``logs/train.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / LOGS_DIR / JSONL_NAME
    records = []
    for number, line in enumerate(read_text_file(path, "log").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"log {str(path)!r}: line {number} is not valid JSON ({exc.msg})") from None
    return [r for r in records if kind is None or r.get("type") == kind]


def _drop_partial_line(path: Path) -> None:
    """Cut an incomplete last line (a process killed while writing it) so appends stay valid."""
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            fh.seek(max(0, size - (1 << 20)))
            tail = fh.read()
            keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
            fh.truncate(keep)
    except FileNotFoundError:
        return
