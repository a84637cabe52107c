"""Model architectures (RADM, JML, the JML relation module), their factories and presets.

Each architecture has a folder: ``model.py`` (the ``nn.Module``, composed of the modules it is
given), ``builder.py`` (the registered factory that builds those modules from a config) and
``presets.py`` (named configs). :mod:`mmfuse.models.builder` holds ``build_model`` and
:mod:`mmfuse.models.checkpoint` ``save_pretrained`` / ``load_pretrained``.

This package is a built-in mmfuse plugin: its hook implementations below contribute its
models and presets to the registry exactly as a third-party plugin would.
"""

from __future__ import annotations

from typing import Any, Callable

from mmfuse.core.registry import hookimpl


@hookimpl
def mmfuse_models() -> dict[str, Callable[..., Any]]:
    from mmfuse.models.jml.builder import build_jml, build_jml_relation
    from mmfuse.models.radm.builder import build_radm

    return {
        "radm": build_radm,
        "jml": build_jml,
        "jml-relation": build_jml_relation,
    }


@hookimpl
def mmfuse_presets() -> dict[str, Any]:
    from mmfuse.models.jml.presets import jml_presets
    from mmfuse.models.radm.presets import radm_presets

    return {
        **radm_presets(),
        **jml_presets(),
    }
