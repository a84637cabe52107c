"""The package layers of pyproject.toml ([tool.importlinter]) hold, and the check really bites.

`lint-imports` (import-linter) reads the contracts: cli > bench > train > tasks > models >
components > core > utils, every package of mmfuse in a layer, no import cycle between packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, subprocess_env


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    return subprocess.run([*command, "--no-cache"], cwd=root, env=subprocess_env([str(root)]), capture_output=True,
                          text=True, timeout=300)


def test_the_layers_and_acyclic_packages_hold():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("core/batch.py", "import mmfuse.models.radm.model", "mmfuse.core is not allowed to import mmfuse.models"),
        ("models/encoding.py", "import mmfuse.tasks.jmasa", "mmfuse.models is not allowed to import mmfuse.tasks"),
        ("heads/span.py", "import mmfuse.data.processing", "mmfuse.heads is not allowed to import mmfuse.data"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, module, line, broken):
    # a copy of the sources with one import that goes up (or sideways within a layer)
    shutil.copytree(REPO_ROOT / "mmfuse", tmp_path / "mmfuse", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "mmfuse" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout, result.stdout
