"""Training checkpoints: a ``save_pretrained`` folder plus everything needed to resume exactly.

Layout of ``<output_dir>/checkpoints/checkpoint-<step>/``::

    model.safetensors, config.json   # mmfuse.models.checkpoint.save_pretrained (load_pretrained works on it)
    task.json                        # task name, label schema, run info (used by eval / predict)
    optimizer.pt, scheduler.pt       # optimizer / LR-scheduler state_dict
    scaler.pt                        # fp16 GradScaler state (only with fp16 autocast)
    rng_state_<rank>.pt              # torch (CPU + CUDA), NumPy and Python RNG states of each rank
    trainer_state.json               # step, epoch, position in the epoch, best metric, patience, args

**Atomicity.** A checkpoint is written into ``checkpoints/.tmp-checkpoint-<step>/`` and published
with one ``os.replace`` (a directory rename); then the pointer file ``checkpoints/latest`` is
replaced atomically. A crash during a save therefore leaves the previous checkpoints and the
pointer untouched (plus a ``.tmp-*`` folder that the next save removes), and
:func:`find_latest_checkpoint` only ever returns complete checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmfuse.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_pretrained
from mmfuse.train.distributed import DistributedContext, barrier
from mmfuse.utils.io import atomic_write_text, atomic_write_with

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
LATEST_NAME = "latest"
TRAINER_STATE_NAME = "trainer_state.json"
TASK_NAME = "task.json"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.pt"


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def save_model_folder(model: nn.Module, directory: Path, task_info: Mapping[str, Any]) -> None:
    """``save_pretrained`` + ``task.json``: a folder that ``mmfuse eval`` / ``predict`` can load."""
    save_pretrained(model, directory)
    write_json(directory / TASK_NAME, dict(task_info))


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished folder ``source`` to ``target``, replacing an existing ``target``.

    A new name is one atomic rename. An existing folder is first renamed aside and deleted
    after the new one is in place, so at every moment one complete version exists on disk.
    """
    if not target.exists():
        os.replace(source, target)
        return
    aside = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
    os.replace(target, aside)
    os.replace(source, target)
    shutil.rmtree(aside, ignore_errors=True)


def export_model(model: nn.Module, directory: Path, task_info: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Path:
    """Write the model folder ``directory`` (weights, config, task.json, optional JSON files) atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}")
    try:
        save_model_folder(model, tmp, task_info)
        for name, value in (extra or {}).items():
            write_json(tmp / name, value)
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_training_checkpoint(
    root: Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
    trainer_state: Mapping[str, Any],
    task_info: Mapping[str, Any],
    ctx: DistributedContext,
) -> Path:
    """Write ``root/checkpoint-<step>`` atomically (every rank calls this; see the module docstring)."""
    root = Path(root)
    name = checkpoint_name(step)
    tmp = root / f".tmp-{name}"
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(ctx)
    torch.save(capture_rng_state(), tmp / rng_file(ctx.rank))
    barrier(ctx)
    if ctx.is_main:
        save_model_folder(model, tmp, task_info)
        atomic_write_with(tmp / OPTIMIZER_NAME, lambda p: torch.save(optimizer.state_dict(), p))
        atomic_write_with(tmp / SCHEDULER_NAME, lambda p: torch.save(scheduler.state_dict(), p))
        if scaler is not None and scaler.is_enabled():
            atomic_write_with(tmp / SCALER_NAME, lambda p: torch.save(scaler.state_dict(), p))
        write_json(tmp / TRAINER_STATE_NAME, dict(trainer_state))  # written last: marks completeness
        replace_directory(tmp, root / name)
        atomic_write_text(root / LATEST_NAME, name + "\n")
    barrier(ctx)
    return root / name


def is_complete_checkpoint(path: Path) -> bool:
    return all((path / f).is_file() for f in (WEIGHTS_NAME, CONFIG_NAME, TRAINER_STATE_NAME, OPTIMIZER_NAME))


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest (lowest step) first."""
    if not Path(root).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(root).iterdir() if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if is_complete_checkpoint(p)]


def find_latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint named by ``root/latest`` (else the newest complete one), or None."""
    root = Path(root)
    pointer = root / LATEST_NAME
    if pointer.is_file():
        candidate = root / pointer.read_text(encoding="utf-8").strip()
        if is_complete_checkpoint(candidate):
            return candidate
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def rotate_checkpoints(root: Path, keep: int, protect: Path | str | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (never ``protect``, e.g. the best); returns the deleted."""
    checkpoints = list_checkpoints(root)
    protected = {Path(root) / Path(protect).name} if protect else set()
    removable = [p for p in checkpoints[: max(0, len(checkpoints) - keep)] if p not in protected]
    for path in removable:
        shutil.rmtree(path, ignore_errors=True)
    return removable


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(checkpoint)!r}: no {TRAINER_STATE_NAME} (not a training checkpoint, or an "
            "incomplete one)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_training_checkpoint(
    checkpoint: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any | None,
    ctx: DistributedContext,
) -> dict[str, Any]:
    """Restore model weights, optimizer, scheduler, scaler and this rank's RNG; return the trainer state."""
    from safetensors.torch import load_model

    checkpoint = Path(checkpoint)
    state = load_trainer_state(checkpoint)
    missing, unexpected = load_model(model, str(checkpoint / WEIGHTS_NAME), strict=False, device=str(ctx.device))
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {str(checkpoint)!r} does not match the model: missing keys {sorted(missing)[:10]}, "
            f"unexpected keys {sorted(unexpected)[:10]}"
        )
    optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_NAME, map_location=ctx.device, weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / SCHEDULER_NAME, map_location="cpu", weights_only=True))
    if scaler is not None and scaler.is_enabled() and (checkpoint / SCALER_NAME).is_file():
        scaler.load_state_dict(torch.load(checkpoint / SCALER_NAME, map_location="cpu", weights_only=True))
    rng_path = checkpoint / rng_file(ctx.rank)
    if rng_path.is_file():
        restore_rng_state(torch.load(rng_path, map_location="cpu", weights_only=False))
    return state


def clean_stale_temporaries(root: Path) -> None:
    """Remove ``.tmp-*`` folders left by an interrupted save."""
    if Path(root).is_dir():
        for path in Path(root).glob(".tmp-*"):
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
