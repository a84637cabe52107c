"""Model architectures and presets (RADM, JML, ablations, baselines).

This package is a built-in mmfuse plugin: its hook implementations below contribute its
components to the registry exactly as a third-party plugin would.
"""

from __future__ import annotations

from typing import Any, Callable

from mmfuse.core.registry import hookimpl


@hookimpl
def mmfuse_models() -> dict[str, Callable[..., Any]]:
    from mmfuse.models.jml.model import JML
    from mmfuse.models.jml.relation import JMLRelation
    from mmfuse.models.radm.model import RADM

    return {
        "radm": RADM,
        "jml": JML,
        "jml-relation": JMLRelation,
    }


@hookimpl
def mmfuse_presets() -> dict[str, Any]:
    from mmfuse.models.jml.model import jml_presets
    from mmfuse.models.radm.model import radm_presets

    return {
        **radm_presets(),
        **jml_presets(),
    }
