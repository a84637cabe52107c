"""Where and how a benchmark ran, recorded in its results JSON: the command, the code's git
revision, the CPU's name and the machine's load (a shared machine's load scatters CPU timings)."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_revision() -> dict[str, Any]:
    """``git_commit`` (None outside a checkout) and ``git_dirty``: uncommitted changes to tracked
    files, except earlier results and docs (they change no timing)."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)benchmarks/results", ":(exclude)docs")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average, None where the platform has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def command_line(invoked_as: str | None = None, argv: Sequence[str] = ()) -> str:
    """The command as a user would type it again: ``invoked_as`` and ``argv``, or without
    ``invoked_as`` this process's own interpreter and arguments."""
    if invoked_as is None:
        return shlex.join([Path(sys.executable).name, *sys.argv])
    return shlex.join([*shlex.split(invoked_as), *argv])
