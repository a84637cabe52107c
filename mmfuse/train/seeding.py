"""Seeding every random number generator a training run touches (``transformers.set_seed``)."""

from __future__ import annotations

from transformers import set_seed

#: NumPy's global seed must fit in 32 bits
MAX_SEED = 2**32 - 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every accelerator) with
    :func:`transformers.set_seed`; ``seed`` must be an int in ``[0, 2**32 - 1]``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: expected an int in [0, {MAX_SEED}], got {seed!r}")
    set_seed(seed)
