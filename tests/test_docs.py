"""The documentation is executable: every code block marked ``run`` is executed here.

Markdown blocks fenced as ```` ```python run ```` run in one namespace per page (in order, like
a notebook) inside a temporary working directory; ```` ```bash run ```` blocks run in a shell
where ``mmfuse`` is the command line of this checkout. Pages are also built with
``mkdocs build --strict`` when mkdocs is installed (broken links fail the test).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, subprocess_env

FENCE = re.compile(r"^```(?P<lang>python|bash) run[^\n]*\n(?P<code>.*?)^```\s*$", re.M | re.S)
PAGES = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md")])


def runnable_blocks(page: Path) -> list[tuple[str, str, int]]:
    text = page.read_text(encoding="utf-8")
    return [(m["lang"], m["code"], text[: m.start()].count("\n") + 1) for m in FENCE.finditer(text)]


PAGES_WITH_BLOCKS = [p for p in PAGES if runnable_blocks(p)]


def test_docs_have_runnable_examples():
    assert PAGES_WITH_BLOCKS, "no ```python run blocks found in README.md / docs/"


@pytest.mark.parametrize("page", PAGES_WITH_BLOCKS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_runnable_blocks(page: Path, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "mmfuse"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mmfuse "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = subprocess_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__docs__"}
    for lang, code, line in runnable_blocks(page):
        where = f"{page.relative_to(REPO_ROOT)}:{line}"
        if lang == "python":
            try:
                exec(compile(code, where, "exec"), namespace)  # noqa: S102 - executing our own docs
            except Exception as exc:  # pragma: no cover - report the block that failed
                raise AssertionError(f"python block at {where} failed: {type(exc).__name__}: {exc}") from exc
        else:
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"bash block at {where} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="mkdocs not installed")
def test_mkdocs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    proc = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
