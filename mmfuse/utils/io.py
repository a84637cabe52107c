"""Atomic file writes: write to a temporary file in the same directory, fsync, ``os.replace``.

An interrupted write therefore leaves either the previous file or the new one, never a
half-written file (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    If the body raises (or the process dies), ``path`` is untouched and the temporary file
    is removed (or, after a crash, left as an ignorable ``.tmp-*`` file).
    """
    target = Path(path)
    if target.is_dir():
        raise WriteError(target, IsADirectoryError(errno.EISDIR, "is a folder"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
    except OSError as exc:
        raise WriteError(target, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except Exception as exc:  # writers in C++ / Rust (torch, safetensors) report errno in the text
            if isinstance(exc, WriteError) or (not isinstance(exc, OSError) and not _errno_in_text(str(exc))):
                raise
            raise WriteError(target, exc) from exc
        try:
            with open(tmp, "rb+") as fh:
                fh.flush()
                os.fsync(fh.fileno())
            # mkstemp (and some writers) create the file 0600; the published file gets the mode a plain
            # open() would give (0666 minus the umask), or keeps the mode of the file it replaces
            os.chmod(tmp, _existing_mode(target) or _umask_mode())
            os.replace(tmp, target)
        except OSError as exc:
            raise WriteError(target, exc) from exc
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _existing_mode(target: Path) -> int | None:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return None


def _umask_mode() -> int:
    umask = os.umask(0)  # the only portable way to read the umask is to set it
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` (e.g. ``safetensors.torch.save_file``) and publish atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


# ---------------------------------------------------------------------------------------------
# errors that name the file
# ---------------------------------------------------------------------------------------------
class WriteError(OSError):
    """A file or folder that could not be written; the message names the path and the cause.

    Subclasses ``OSError`` with the original ``errno`` (``errno.ENOSPC`` for a full disk), so
    callers can still test the cause; writers that report failures as other exceptions (the
    safetensors Rust writer: ``... (os error 28)``) are translated to the same form.
    """

    def __init__(self, path: str | os.PathLike[str], cause: BaseException) -> None:
        self.path = Path(path)
        number = getattr(cause, "errno", None) or _errno_in_text(str(cause))
        reason = os.strerror(number) if number else str(cause)
        super().__init__(number, f"cannot write {str(self.path)!r}: {reason}")

    def __str__(self) -> str:
        return self.args[1] if len(self.args) > 1 else super().__str__()


def _errno_in_text(text: str) -> int | None:
    match = re.search(r"os error (\d+)", text)
    if match:
        return int(match.group(1))
    if "No space left on device" in text or "StorageFull" in text:
        return errno.ENOSPC
    return None


class TextDecodeError(ValueError):
    """A text file that is not valid UTF-8; the message names the file, line and column."""


def decode_text(data: bytes, path: str | os.PathLike[str]) -> str:
    """``data`` decoded as UTF-8 (a leading BOM is dropped), else :class:`TextDecodeError` naming
    ``path``, the 1-based line and column and the offending byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise TextDecodeError(
            f"{path}: line {line}, column {column}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None


def read_text_file(path: str | os.PathLike[str], what: str = "file") -> str:
    """The UTF-8 text of ``path`` **without** newline translation (``\\r`` stays ``\\r``).

    Errors are one line naming the file: missing (``FileNotFoundError``), a folder or unreadable
    (``OSError``), not UTF-8 (:class:`TextDecodeError`, with the line).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist")
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{what} {str(p)!r} is a folder, expected a file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise OSError(exc.errno, f"{what} {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    return decode_text(data, p)


def read_json_file(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parse the JSON file ``path``; errors name the file (truncated, not JSON, not UTF-8)."""
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} {str(path)!r}: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        ending = text.rstrip()[-1:]
        hint = " (truncated?)" if exc.pos >= len(text.rstrip()) or ending not in ("}", "]", '"') else ""
        raise ValueError(f"{what} {str(path)!r}: not valid JSON{hint}: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None


# ---------------------------------------------------------------------------------------------
# JSON that is always valid JSON
# ---------------------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf, also in tensors / NumPy scalars) replaced
    by ``None``, so ``json.dumps(..., allow_nan=False)`` writes standard JSON (``null``).

    ``json.dumps`` would otherwise write the bare tokens ``NaN`` / ``Infinity``, which are not JSON
    and which most readers (``jq``, JavaScript, Go) reject.
    """
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, numbers.Real):  # float, NumPy floating scalars
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):  # 0-d tensor / array
        return json_safe(value.item())
    return value


def json_dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)``: standard JSON, never a bare ``NaN``."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# checking an output location before doing the work
# ---------------------------------------------------------------------------------------------
def check_writable_dir(directory: str | os.PathLike[str], what: str = "output folder", create: bool = True) -> Path:
    """Make sure files can be created in ``directory`` (created if missing and ``create``).

    The check writes and removes a probe file, so it is right whatever grants or denies access
    (permissions, read-only mounts, ACLs, running as root). Raises ``OSError`` with one line
    naming the folder.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{what} {str(d)!r} is a file, expected a folder")
    for parent in d.parents:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{what} {str(d)!r}: {str(parent)!r} is a file, not a folder")
    try:
        if create:
            d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(exc.errno, f"{what} {str(d)!r} is not writable: {exc.strerror or exc}") from None
    return d


def check_writable_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """Make sure ``path`` can be written atomically: not a folder, and its folder is writable."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{what} {str(p)!r} is a folder, expected a file path")
    check_writable_dir(p.parent if str(p.parent) else Path("."), f"{what} {str(p)!r}: folder")
    return p
