"""Auxiliary losses: ITC and ITM, attached to any model with the fusion protocol (:mod:`mmfuse.losses.auxiliary`).

Task losses are not registered: each model computes its own (RADM: the heads' cross-entropy,
JML: start + end + polarity) in ``forward``.

This package is a built-in mmfuse plugin: its hook implementations below contribute its
components to the registry exactly as a third-party plugin would.
"""

from __future__ import annotations

from typing import Any, Callable

from mmfuse.core.registry import hookimpl


@hookimpl
def mmfuse_losses() -> dict[str, Callable[..., Any]]:
    from mmfuse.losses.itc import ITCLoss
    from mmfuse.losses.itm import ITMLoss

    return {"itc": ITCLoss, "itm": ITMLoss}
