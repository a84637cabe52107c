"""Non-finite losses, gradients and weights: detect them before they reach the weights or a file.

Every optimizer step checks, before the update, that the step's loss is finite and (without an
fp16 ``GradScaler``, which handles overflowing gradients itself by skipping the step) that the
gradient norm is finite; under DDP the ranks agree through one all-reduce. What happens then is
``TrainingArguments.on_nonfinite_loss``:

* ``"stop"`` (default): the update is not applied and :class:`NonFiniteLossError` names the step
  and the last good checkpoint (which is kept: nothing is written after the bad step);
* ``"skip"``: the update is not applied, the step still counts (data, schedule), and the skip is
  logged (``info`` record ``"event": "nonfinite_step_skipped"``, ``skipped_steps`` in train records).

Weights are checked again before every checkpoint and before the final export, so a model with
NaN / infinite weights is never written as a checkpoint or as ``model/``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmfuse.models.checkpoint import nonfinite_tensors


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss, gradient or weights at ``step``; nothing after the
    last good checkpoint was written."""

    def __init__(self, message: str, step: int, checkpoint: str | None) -> None:
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(message)


def step_is_finite(loss_sum: torch.Tensor | None, grad_norm: float | None) -> bool:
    """True when the step's summed loss (a tensor, any device) and gradient norm are finite."""
    if loss_sum is not None and not bool(torch.isfinite(loss_sum).all()):
        return False
    return grad_norm is None or math.isfinite(grad_norm)


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the model's floating-point parameters and buffers that hold NaN or infinity."""
    return nonfinite_tensors(dict(model.state_dict()))


def describe_value(value: float | None) -> str:
    if value is None:
        return "not finite"
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else f"{value:g}"
