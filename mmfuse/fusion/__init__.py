"""Fusion blocks (``radm-interaction``, ``self-fusion``) and what they are made of: multi-head
residual attention (:mod:`mmfuse.fusion.residual_attention`), attention / feed-forward sublayers
(:mod:`mmfuse.fusion.blocks`) and pooling.

Every registered fusion block follows the protocol of :mod:`mmfuse.fusion.protocol`
(``d_model`` injected; ``forward(text, text_mask, image, image_mask, return_attentions)`` →
:class:`FusionOutput`).

This package is a built-in mmfuse plugin: its hook implementations below contribute its
components to the registry exactly as a third-party plugin would.
"""

from __future__ import annotations

from typing import Any, Callable

from mmfuse.fusion.protocol import FusionBlock, FusionOutput
from mmfuse.core.registry import hookimpl

__all__ = ["FusionBlock", "FusionOutput"]


@hookimpl
def mmfuse_fusions() -> dict[str, Callable[..., Any]]:
    from mmfuse.fusion.interaction import RADMInteraction
    from mmfuse.fusion.self_fusion import SelfFusionEncoder

    return {
        "radm-interaction": RADMInteraction,
        "self-fusion": SelfFusionEncoder,
    }
