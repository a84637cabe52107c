"""The module the ``mmfuse`` entry point names: its hook implementations are the plugin.

mmfuse imports it on the first registry lookup, calls each ``@mmfuse.hookimpl`` function when
it builds its name index, and files the returned ``name → factory`` (or ``name → preset``)
entries under this plugin's name, ``mmfuse-film`` (the entry point's name in pyproject.toml).
"""

from __future__ import annotations

from typing import Any, Callable

import mmfuse
from mmfuse_film.film import FiLMFusion


@mmfuse.hookimpl
def mmfuse_fusions() -> dict[str, Callable[..., Any]]:
    return {"film": FiLMFusion}


def radm_film_tiny() -> dict[str, Any]:
    """RADM-tiny whose interaction layers are replaced by FiLM fusion (text scales/shifts image tokens)."""
    # Derived from mmfuse's own preset when it is built, so it follows changes to radm-tiny;
    # a fusion spec with another name replaces radm-tiny's instead of merging into it.
    return mmfuse.resolve_model_config("radm-tiny", fusion={"name": "film", "hidden_dim": 64, "dropout": 0.1})


@mmfuse.hookimpl
def mmfuse_presets() -> dict[str, Callable[[], dict[str, Any]]]:
    return {"radm-tiny-film": radm_film_tiny}
