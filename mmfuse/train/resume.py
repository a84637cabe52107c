"""What a resumed run must share with the checkpoint it resumes from.

A checkpoint continues exactly only with the same batches, steps, model and data. Resuming
therefore refuses, in one :class:`~mmfuse.core.config.ConfigError` line that lists every difference:

* the options that define the batch / step sequence (:data:`~mmfuse.train.arguments.SCHEDULE_FIELDS`)
  and the number of processes;
* the model config (``config.json`` of the checkpoint vs the model being trained, e.g. a changed
  ``dropout`` or ``d_model``);
* the task, its label schema, and the data set recorded by the trainer's ``run_info`` (name, options,
  evaluation split; the CLI records them) — except ``data_dir``, which may change when the data
  moved;
* the number of training and evaluation samples.

Everything else (logging, evaluation batch size, workers, device, early stopping, checkpoint
limits, ``output_dir``) may change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmfuse.models.checkpoint import CONFIG_NAME
from mmfuse.core.config import ConfigError
from mmfuse.core.provenance import METADATA_KEY
from mmfuse.utils.io import read_json_file

#: run_info keys that may differ on resume
RUN_INFO_MAY_CHANGE = ("dataset.data_dir",)


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value} if prefix else {"": value}


def differences(saved: Any, current: Any, label: str, ignore: tuple[str, ...] = ()) -> list[str]:
    """``["<label> <key> (<saved> → <current>)", ...]`` for every dotted key that differs."""
    old, new = flatten(_normal(saved)), flatten(_normal(current))
    out = []
    for key in sorted(set(old) | set(new)):
        if key in ignore or old.get(key, "<unset>") == new.get(key, "<unset>"):
            continue
        name = f"{label} {key}".rstrip()
        out.append(f"{name} ({_short(old.get(key, '<unset>'))} → {_short(new.get(key, '<unset>'))})")
    return out


def _short(value: Any) -> str:
    text = value if value == "<unset>" else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_resume(
    checkpoint: Path,
    saved_state: Any,
    *,
    args: Any,
    schedule_fields: tuple[str, ...],
    world_size: int,
    model_config: Mapping[str, Any] | None,
    task_info: Mapping[str, Any],
    saved_task_info: Mapping[str, Any] | None,
    num_samples: Mapping[str, int | None],
) -> None:
    """Raise one ``ConfigError`` listing every difference that makes ``checkpoint`` unresumable."""
    changed: list[str] = []
    saved_args = saved_state.args
    for field in schedule_fields:
        if field in saved_args and saved_args[field] != getattr(args, field):
            changed.append(f"{field} ({saved_args[field]!r} → {getattr(args, field)!r})")
    if saved_state.world_size != world_size:
        changed.append(f"world size ({saved_state.world_size} → {world_size})")
    if model_config is not None and (checkpoint / CONFIG_NAME).is_file():
        saved_config = read_json_file(checkpoint / CONFIG_NAME, "checkpoint file")
        if isinstance(saved_config, dict):  # the provenance record (mmfuse version, plugins) may change
            saved_config = {k: v for k, v in saved_config.items() if k != METADATA_KEY}
        changed += differences(saved_config, model_config, "model config")
    if saved_task_info is not None:
        changed += differences(saved_task_info, task_info, "run", ignore=RUN_INFO_MAY_CHANGE)
    saved_samples = getattr(saved_state, "num_samples", None) or {}
    for split, count in num_samples.items():
        if saved_samples.get(split) is not None and count is not None and saved_samples[split] != count:
            changed.append(f"{split} samples ({saved_samples[split]} → {count})")
    if changed:
        shown = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise ConfigError(
            f"resume: {str(checkpoint)!r} was written with different settings: {shown}; resume with the "
            "original settings, or start a new run (another output_dir, or overwrite_output_dir)"
        )
