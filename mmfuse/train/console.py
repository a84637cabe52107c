"""What the trainer writes to the console (rank 0, through the ``mmfuse.train`` logger).

* one line per evaluation with the dev metrics and the best value so far;
* without a progress bar (``progress_bar=False`` / ``--no-progress-bar``), one line per logging
  window (``logging_steps``) with the step, loss, learning rate, throughput and time left, so a
  run without a bar is never silent;
* evaluation shows its own progress bar over the batches (``leave=False``).

The JSONL / TensorBoard logs (:mod:`mmfuse.train.logs`) are unaffected; this is only the view.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from mmfuse.utils.console import get_logger

logger = get_logger("mmfuse.train")

#: keys of a training record shown in a progress line, in this order
_TRAIN_KEYS = ("loss", "lr", "grad_norm")


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    value = float(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4f}"


def format_metrics(values: Mapping[str, Any]) -> str:
    """``"accuracy 0.8123 · macro_f1 0.8011 · loss 0.4521"`` (numbers only, in the given order)."""
    return " · ".join(f"{k} {_number(v)}" for k, v in values.items()
                      if isinstance(v, numbers.Real) and not isinstance(v, bool))


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def compact_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` without the ``task/metric`` copies when there is one task (the means equal them)."""
    tasks = {k.split("/", 1)[0] for k in metrics if "/" in k}
    if len(tasks) != 1:
        return dict(metrics)
    plain = {k for k in metrics if "/" not in k}
    return {k: v for k, v in metrics.items() if "/" not in k or k.split("/", 1)[1] not in plain}


def log_evaluation(step: int, total_steps: int, epoch: float, metrics: Mapping[str, Any], metric_name: str,
                   best: float | None) -> str:
    """Log (INFO) and return the line of one evaluation during training."""
    best_text = f" | best {metric_name} {_number(best)}" if best is not None else ""
    line = f"eval  step {step}/{total_steps} (epoch {epoch:.2f}): {format_metrics(compact_metrics(metrics))}{best_text}"
    logger.info(line)
    return line


def log_final(checkpoint: str | None, metrics: Mapping[str, Any]) -> str:
    """Log (INFO) and return the line of the exported model's evaluation."""
    source = f" ({checkpoint})" if checkpoint else ""
    line = f"final model{source}: {format_metrics(compact_metrics(metrics))}"
    logger.info(line)
    return line


def log_training(step: int, total_steps: int, record: Mapping[str, Any], elapsed: float) -> str:
    """Log (INFO) and return a progress line for runs without a progress bar."""
    done = step / max(total_steps, 1)
    left = elapsed * (1 - done) / done if done > 0 else 0.0
    shown = {k: record[k] for k in _TRAIN_KEYS if k in record}
    epoch = record.get("epoch")
    where = f"epoch {epoch:.2f}, " if isinstance(epoch, numbers.Real) else ""
    speed = record.get("samples_per_second")
    speed_text = f" · {float(speed):.1f} samples/s" if isinstance(speed, numbers.Real) else ""
    line = (f"train step {step}/{total_steps} ({where}{done:.0%}): {format_metrics(shown)}{speed_text} | "
            f"{_duration(elapsed)} elapsed, ~{_duration(left)} left")
    logger.info(line)
    return line


def eval_progress(batches: Iterable[Any], total: int | None, enabled: bool) -> Iterable[Any]:
    """``batches`` wrapped in a transient ``eval`` progress bar (unchanged when disabled)."""
    if not enabled:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, total=total, desc="eval", unit="batch", leave=False, dynamic_ncols=True)
