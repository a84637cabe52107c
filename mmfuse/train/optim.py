"""AdamW with the usual weight-decay exclusions and a linear warm-up / linear decay schedule."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from mmfuse.train.arguments import TrainingArguments


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices/embeddings with ``weight_decay``; biases, norm weights and scalars
    (anything with fewer than 2 dimensions, e.g. ITC's temperature) without."""
    decay, no_decay = [], []
    for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, args: TrainingArguments) -> torch.optim.AdamW:
    groups = [g for g in parameter_groups(model, args.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("model: has no trainable parameters")
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


def warmup_steps_for(args: TrainingArguments, total_steps: int) -> int:
    if args.warmup_steps is not None:
        return min(args.warmup_steps, total_steps)
    return int(round(args.warmup_ratio * total_steps))


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Learning rate × ``step / warmup`` during warm-up, then linearly down to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)
