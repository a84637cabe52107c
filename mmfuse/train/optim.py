"""AdamW over configurable parameter groups, and the learning-rate schedule.

Parameter groups (``TrainingArguments.param_groups``) select parameters by name pattern
(``fnmatch``, e.g. ``"encoders.text_encoder.*"``) and give them their own learning rate and
weight decay; every trainable parameter belongs to the first group whose pattern matches it, the
rest to the default group (``learning_rate``, ``weight_decay``). Inside every group, biases, norm
weights and scalars get no weight decay — timm's rule (``timm.optim.param_groups_weight_decay``):
``param.ndim <= 1 or name.endswith(".bias")``, plus the names a model lists in
``no_weight_decay()``.

The schedule comes from ``transformers.get_scheduler`` (``lr_scheduler_type``: linear warm-up
then linear decay, cosine, constant with warm-up, ...); it multiplies every group's learning
rate by the same factor.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from mmfuse.core.config import ConfigError
from mmfuse.train.arguments import TrainingArguments


def _patterns(group: Mapping[str, Any]) -> list[str]:
    match = group["match"]
    return [match] if isinstance(match, str) else list(match)


def _no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names the model exempts from weight decay (timm's ``no_weight_decay()`` convention)."""
    hook = getattr(model, "no_weight_decay", None)
    return set(hook()) if callable(hook) else set()


def _split_decay(named: Sequence[tuple[str, nn.Parameter]], weight_decay: float, exempt: set[str],
                 extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in named:
        (no_decay if param.ndim <= 1 or name.endswith(".bias") or name in exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, **extra},
            {"params": no_decay, "weight_decay": 0.0, **extra}]


def parameter_groups(model: nn.Module, weight_decay: float,
                     groups: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``model``'s trainable parameters (sorted by name).

    Without ``groups``: two groups, with and without ``weight_decay``. With ``groups``
    (``[{"match": pattern(s), "learning_rate": ..., "weight_decay": ...}, ...]``): those two for
    the parameters no pattern matches, then two per configured group, with its ``lr`` (when
    given) and weight decay (default ``weight_decay``). Empty groups are kept (callers drop them).
    A pattern that matches no trainable parameter is a :class:`ConfigError` naming it.
    """
    exempt = _no_weight_decay_names(model)
    named = sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda item: item[0])
    groups = list(groups or [])
    members: list[list[tuple[str, nn.Parameter]]] = [[] for _ in groups]
    rest: list[tuple[str, nn.Parameter]] = []
    used: list[set[str]] = [set() for _ in groups]
    for name, param in named:
        for i, group in enumerate(groups):
            hit = next((p for p in _patterns(group) if fnmatch.fnmatchcase(name, p)), None)
            if hit is not None:
                members[i].append((name, param))
                used[i].add(hit)
                break
        else:
            rest.append((name, param))
    all_names = [n for n, _ in model.named_parameters()]
    for i, group in enumerate(groups):
        for pattern in _patterns(group):
            if pattern in used[i]:
                continue
            if any(fnmatch.fnmatchcase(n, pattern) for n, _ in named):
                why = "every parameter it matches is taken by an earlier group"
            elif any(fnmatch.fnmatchcase(n, pattern) for n in all_names):
                why = "it matches only frozen parameters"
            else:
                prefixes = list(dict.fromkeys(".".join(n.split(".")[:2]) for n in all_names))
                shown = ", ".join(f"'{p}.*'" if p not in all_names else repr(p) for p in prefixes[:8])
                why = f"it matches no parameter name (the names start with {shown}{', ...' if len(prefixes) > 8 else ''})"
            raise ConfigError(f"training.param_groups[{i}].match: {pattern!r} selects no trainable parameter: {why}")
    result = _split_decay(rest, weight_decay, exempt, {})
    for group, named_group in zip(groups, members):
        extra = {"lr": float(group["learning_rate"])} if group.get("learning_rate") is not None else {}
        result += _split_decay(named_group, float(group.get("weight_decay", weight_decay)), exempt, extra)
    return result


def build_optimizer(model: nn.Module, args: TrainingArguments) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` (``args.param_groups``), default lr ``args.learning_rate``."""
    groups = [g for g in parameter_groups(model, args.weight_decay, args.param_groups) if g["params"]]
    if not groups:
        raise ValueError("model: has no trainable parameters")
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


def warmup_steps_for(args: TrainingArguments, total_steps: int) -> int:
    if args.warmup_steps is not None:
        return min(args.warmup_steps, total_steps)
    return int(round(args.warmup_ratio * total_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, args: TrainingArguments, total_steps: int) -> LRScheduler:
    """``transformers.get_scheduler(args.lr_scheduler_type)`` with the warm-up of ``args``, stepped
    once per optimizer step. ``linear``: ``lr · s / W`` for step ``s < W``, then
    ``lr · (T − s) / (T − W)``."""
    from transformers import get_scheduler

    return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps_for(args, total_steps),
                         num_training_steps=total_steps)
