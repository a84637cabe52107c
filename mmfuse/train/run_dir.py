"""The output folder of a training run: one run at a time, no silent mixing, no leftovers.

* **Lock.** A run holds an exclusive ``flock`` on ``<output_dir>/.mmfuse.lock`` for as long as
  it trains. A second run into the same folder stops at once with a line naming the holder
  (pid, host, start time) instead of deleting the first run's temporaries and interleaving
  logs. The kernel drops the lock when its process dies, even under ``kill -9``; the holder
  record left in the file then marks the lock as *stale*, which the next run reports and
  takes over (:attr:`RunDirLock.stale`).
* **Fresh starts.** A run that does not resume refuses a folder that already holds a run
  (``checkpoints/``, ``logs/``, ``model/``, ``run.yaml``) unless ``overwrite_output_dir`` is set,
  which deletes exactly those entries (other files are left alone).
* **Leftovers.** Temporaries of interrupted saves (``.tmp-*``, ``.old-*`` in the folder and in
  ``checkpoints/``) are removed when a run starts, under the lock, so a live run's files are
  never touched.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

from mmfuse.utils.io import check_writable_dir

LOCK_NAME = ".mmfuse.lock"
#: entries a training run writes into its output folder
RUN_ENTRIES: tuple[str, ...] = ("checkpoints", "logs", "model", "run.yaml")

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class OutputDirError(ValueError):
    """The output folder cannot be used as asked (busy, or holds another run); one line."""


def _lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:  # a filesystem without flock (some network mounts): run unlocked, say so
            warnings.warn(f"training.output_dir: cannot lock {LOCK_NAME} ({exc.strerror}); concurrent runs into "
                          "this folder are not detected", stacklevel=3)
        return True
    import msvcrt  # pragma: no cover

    try:  # pragma: no cover
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # pragma: no cover
        return False
    return True  # pragma: no cover


def _unlock(fd: int) -> None:
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_record(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    if not raw.strip():
        return None
    try:
        record = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return {"pid": "?", "note": "unreadable holder record"}
    return record if isinstance(record, dict) else {"pid": "?"}


def _describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "another process"
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')}, started {record.get('started', '?')}"


class RunDirLock:
    """Exclusive lock of an output folder (see the module docstring). Use as a context manager or
    call :meth:`acquire` / :meth:`release`."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.stale: dict[str, Any] | None = None  # holder record of a run that died holding the lock
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        """Take the lock or raise :class:`OutputDirError` naming the run that holds it."""
        if self._fd is not None:
            return self
        check_writable_dir(self.output_dir, "training.output_dir")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"training.output_dir: cannot create the lock file {str(self.path)!r}: "
                                     f"{exc.strerror}") from None
        if not _lock(fd):
            holder = _read_record(fd)
            os.close(fd)
            raise OutputDirError(
                f"training.output_dir: {str(self.output_dir)!r} is in use by another mmfuse run ({_describe(holder)}); "
                "wait for it to finish, or use another --output-dir"
            )
        self.stale = _read_record(fd)  # a clean release empties the file: a record means its holder died
        record = {
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def check_available(self) -> None:
        """Raise :class:`OutputDirError` if another run holds the folder; takes nothing, changes
        nothing (a stale holder record stays for :meth:`acquire` to report)."""
        check_writable_dir(self.output_dir, "training.output_dir")
        if not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDWR)
        try:
            if not _lock(fd):
                raise OutputDirError(
                    f"training.output_dir: {str(self.output_dir)!r} is in use by another mmfuse run "
                    f"({_describe(_read_record(fd))}); wait for it to finish, or use another --output-dir"
                )
            _unlock(fd)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # an empty lock file = released cleanly (not stale)
        with contextlib.suppress(OSError):
            _unlock(fd)
        os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def used_entries(output_dir: str | os.PathLike[str]) -> list[str]:
    """The :data:`RUN_ENTRIES` present in ``output_dir`` (empty folders do not count)."""
    root = Path(output_dir)
    found = []
    for name in RUN_ENTRIES:
        path = root / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def clear_run(output_dir: str | os.PathLike[str]) -> list[str]:
    """Delete the :data:`RUN_ENTRIES` of ``output_dir`` (``overwrite_output_dir``); returns them."""
    removed = []
    for name in RUN_ENTRIES:
        path = Path(output_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(name)
        elif path.exists() or path.is_symlink():
            path.unlink()
            removed.append(name)
    return removed


def is_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies inside ``folder`` (both resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True
