"""Losses: task losses and the ITC / ITM auxiliary losses.

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
