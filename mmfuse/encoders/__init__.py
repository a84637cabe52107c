"""Text and image encoders (HF transformers text models, timm ViT patches, timm ResNet region grids).

This package is a built-in mmfuse plugin: its hook implementations below contribute its
components to the registry exactly as a third-party plugin would.
"""

from __future__ import annotations

from typing import Any, Callable

from mmfuse.core.registry import hookimpl


@hookimpl
def mmfuse_encoders() -> dict[str, Callable[..., Any]]:
    from mmfuse.encoders.regions import TimmRegionEncoder
    from mmfuse.encoders.text import HFTextEncoder
    from mmfuse.encoders.vit import TimmViTEncoder

    return {
        "hf-text": HFTextEncoder,
        "timm-vit": TimmViTEncoder,
        "timm-regions": TimmRegionEncoder,
    }
