"""Training checkpoints: a ``save_pretrained`` folder plus everything needed to resume exactly.

Layout of ``<output_dir>/checkpoints/checkpoint-<step>/``::

    model.safetensors, config.json   # mmfuse.models.checkpoint.save_pretrained (load_pretrained works on it)
    task.json                        # task name, label schema, run info (used by eval / predict)
    optimizer.safetensors            # optimizer state_dict      (mmfuse.utils.state_io: tensors +
    scheduler.safetensors            # LR-scheduler state_dict    JSON structure, never pickle)
    scaler.safetensors               # fp16 GradScaler state (only with fp16 autocast)
    rng_state_<rank>.safetensors     # torch (CPU + CUDA), NumPy and Python RNG states of each rank
    trainer_state.json               # step, epoch, position in the epoch, best metric, patience, args

Nothing is unpickled when a checkpoint is read (a pickle can run arbitrary code): states are
safetensors tensors plus JSON. Checkpoints of older versions (``*.pt`` files) are refused with a
message saying so.

**Atomicity.** A checkpoint is written into ``checkpoints/.tmp-checkpoint-<step>/`` and published
with one ``os.replace`` (a directory rename); then the pointer file ``checkpoints/latest`` is
replaced atomically. A crash during a save therefore leaves the previous checkpoints and the
pointer untouched (plus a ``.tmp-*`` folder that the next run removes when it starts), and
:func:`find_latest_checkpoint` only ever returns complete checkpoints.
"""

from __future__ import annotations

import contextlib
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

from mmfuse.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_weights, save_pretrained
from mmfuse.train.distributed import DistributedContext, barrier
from mmfuse.utils.io import atomic_write_text, json_dumps, read_json_file
from mmfuse.utils.state_io import StateFileError, load_state, save_state

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
LATEST_NAME = "latest"
TRAINER_STATE_NAME = "trainer_state.json"
TASK_NAME = "task.json"
OPTIMIZER_NAME = "optimizer.safetensors"
SCHEDULER_NAME = "scheduler.safetensors"
SCALER_NAME = "scaler.safetensors"
#: pickled files of checkpoints written before mmfuse stopped using pickle (never read)
LEGACY_PICKLES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state_0.pt")
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.safetensors"


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
    """Standard JSON (non-finite numbers as ``null``), written atomically."""
    atomic_write_text(path, json_dumps(value, indent=2, sort_keys=False) + "\n")


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
    save_state(tmp / rng_file(ctx.rank), capture_rng_state())
    barrier(ctx)
    if ctx.is_main:
        save_model_folder(model, tmp, task_info)
        save_state(tmp / OPTIMIZER_NAME, optimizer.state_dict())
        save_state(tmp / SCHEDULER_NAME, scheduler.state_dict())
        if scaler is not None and scaler.is_enabled():
            save_state(tmp / SCALER_NAME, scaler.state_dict())
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
        with contextlib.suppress(OSError, ValueError):  # a garbled pointer: fall back to the newest
            name = pointer.read_bytes().decode("utf-8").strip()
            if _CHECKPOINT_RE.match(name) and is_complete_checkpoint(root / name):
                return root / name
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
    state = read_json_file(path, "checkpoint file")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint file {str(path)!r}: expected a JSON object, got {type(state).__name__}")
    return state


def check_not_legacy(checkpoint: Path) -> None:
    """Refuse checkpoints whose states are pickles (written by mmfuse before 0.1.1): never unpickled."""
    legacy = [name for name in LEGACY_PICKLES if (Path(checkpoint) / name).is_file()]
    if legacy and not (Path(checkpoint) / OPTIMIZER_NAME).is_file():
        raise CheckpointError(
            f"checkpoint {str(checkpoint)!r} stores its training state as pickles ({', '.join(legacy)}), which "
            "mmfuse never loads (unpickling can run code); its model can still be used (model.safetensors), "
            "but training cannot resume from it"
        )


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
    checkpoint = Path(checkpoint)
    check_not_legacy(checkpoint)
    state = load_trainer_state(checkpoint)
    load_weights(model, checkpoint / WEIGHTS_NAME, ctx.device)
    try:
        optimizer.load_state_dict(load_state(checkpoint / OPTIMIZER_NAME))
        scheduler.load_state_dict(load_state(checkpoint / SCHEDULER_NAME))
        if scaler is not None and scaler.is_enabled() and (checkpoint / SCALER_NAME).is_file():
            scaler.load_state_dict(load_state(checkpoint / SCALER_NAME))
        rng_path = checkpoint / rng_file(ctx.rank)
        if rng_path.is_file():
            restore_rng_state(load_state(rng_path))
    except StateFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {str(checkpoint)!r}: its optimizer / scheduler / RNG state does not fit "
                              f"this run: {str(exc).splitlines()[0][:200]}") from None
    return state


def clean_stale_temporaries(root: Path) -> list[Path]:
    """Remove ``.tmp-*`` / ``.old-*`` files and folders left in ``root`` by an interrupted save or
    export; returns what was removed. Call it only while holding the run's lock
    (:mod:`mmfuse.train.run_dir`), so a live run's temporaries are never touched."""
    removed = []
    if Path(root).is_dir():
        for path in sorted(Path(root).iterdir()):
            if path.name.startswith((".tmp-", ".old-")):
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                    removed.append(path)
    return removed
