"""Prediction heads: classification, span extraction and polarity, text-image relation.

This package is a built-in mmfuse plugin: its hook implementations below contribute its
components to the registry exactly as a third-party plugin would.
"""

from __future__ import annotations

from typing import Any, Callable

from mmfuse.core.registry import hookimpl


@hookimpl
def mmfuse_heads() -> dict[str, Callable[..., Any]]:
    from mmfuse.heads.classification import ClassificationHeads
    from mmfuse.heads.relation import RelationHead
    from mmfuse.heads.span import AspectExtractionHead, AspectSentimentHead

    return {
        "classifier": ClassificationHeads,
        "jml-relation-detection": RelationHead,
        "jml-aspect-extraction": AspectExtractionHead,
        "jml-aspect-sentiment": AspectSentimentHead,
    }
