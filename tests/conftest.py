"""Shared fixtures: repository paths, the shared data folder, throw-away plugins."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    """The folder of public data set files (Twitter-2015 tsv, TRC csv): $MMFUSE_SHARED_DATA, else
    a ``shared/data`` folder next to the checkout (or one of its parents)."""
    env = os.environ.get("MMFUSE_SHARED_DATA")
    if env:
        return Path(env)
    for ancestor in list(REPO_ROOT.parents)[:3]:
        candidate = ancestor / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data set files (see ``_shared_data_dir``); tests using it skip when they are absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not present")
    return path


def subprocess_env(extra_pythonpath: list[str] | None = None) -> dict[str, str]:
    """Environment for child Pythons: the repo (and extra folders) importable."""
    env = dict(os.environ)
    parts = [*(extra_pythonpath or []), str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env


def make_installed_plugin(root: Path, dist: str, module: str, source: str, ep_name: str | None = None) -> Path:
    """Create a real installed distribution in ``root``: a module plus a ``*.dist-info``
    folder whose ``entry_points.txt`` registers it in the ``mmfuse`` group.

    Putting ``root`` on ``sys.path`` makes ``importlib.metadata`` see it exactly as if pip
    had installed it.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[mmfuse]\n{ep_name or dist} = {module}\n")
    (info / "RECORD").write_text("")
    return root


@pytest.fixture
def installed_plugin_dir(tmp_path, monkeypatch):
    """Factory fixture: ``installed_plugin_dir(dist, module, source)`` → folder on sys.path."""
    created: list[str] = []

    def factory(dist: str, module: str, source: str, ep_name: str | None = None) -> Path:
        root = make_installed_plugin(tmp_path / dist, dist, module, source, ep_name)
        monkeypatch.syspath_prepend(str(root))
        created.append(module)
        return root

    yield factory
    for module in created:
        sys.modules.pop(module, None)
