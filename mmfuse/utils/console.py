"""Console output: the ``mmfuse`` logger, its verbosity, terminal-width rich tables, plain summaries.

mmfuse logs through Python :mod:`logging` under the ``"mmfuse"`` logger (``mmfuse.train``,
``mmfuse.models.checkpoint``, ...). Like ``transformers``, the library logger has a handler of its own
(on ``sys.stderr``, writing through ``tqdm.write`` so it never breaks a progress bar), level INFO
by default so training prints its evaluation lines; ``MMFUSE_VERBOSITY`` (``debug``, ``info``,
``warning``, ``error``) or :func:`set_verbosity` change it, and the CLI's ``-v`` / ``-q`` map to
it. Applications that configure logging themselves call :func:`disable_default_handler`, after
which records propagate to the root logger.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import Any

LOGGER_NAME = "mmfuse"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}
_lock = threading.Lock()
_handler: logging.Handler | None = None


class _TqdmStderrHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stderr`` through ``tqdm.write`` (progress bars stay intact)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _default_level() -> int:
    value = os.environ.get("MMFUSE_VERBOSITY", "").strip().lower()
    return _LEVELS.get(value, logging.INFO)


def _root() -> logging.Logger:
    global _handler
    logger = logging.getLogger(LOGGER_NAME)
    if _handler is None:
        with _lock:
            if _handler is None:
                _handler = _TqdmStderrHandler()
                _handler.setFormatter(logging.Formatter("%(message)s"))
                logger.addHandler(_handler)
                logger.setLevel(_default_level())
                logger.propagate = False
    return logger


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``mmfuse`` logger or one below it (``get_logger(__name__)`` in mmfuse modules)."""
    root = _root()
    if not name or name == LOGGER_NAME:
        return root
    return logging.getLogger(name if name.startswith(f"{LOGGER_NAME}.") else f"{LOGGER_NAME}.{name}")


def set_verbosity(level: int | str) -> None:
    """Level of the ``mmfuse`` logger: a :mod:`logging` level or ``"debug"`` / ``"info"`` / ..."""
    if isinstance(level, str):
        if level.lower() not in _LEVELS:
            raise ValueError(f"verbosity: expected one of {', '.join(_LEVELS)}, got {level!r}")
        level = _LEVELS[level.lower()]
    _root().setLevel(level)


def verbosity_from_flags(verbose: int, quiet: int) -> int:
    """The level for ``-v`` / ``-q`` counts: INFO by default, ``-v`` DEBUG, ``-q`` WARNING, ``-qq`` ERROR."""
    steps = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    index = min(max(1 - verbose + quiet, 0), len(steps) - 1)
    return steps[index]


def disable_default_handler() -> None:
    """Remove mmfuse's own handler; records then propagate to the application's handlers."""
    global _handler
    logger = _root()
    with _lock:
        if _handler is not None:
            logger.removeHandler(_handler)
            logger.propagate = True


def console(**kwargs: Any) -> Any:
    """A rich ``Console`` as wide as the terminal (``COLUMNS`` when set; 80 when not a terminal)."""
    from rich.console import Console

    return Console(**kwargs)


_ROLE = re.compile(r":[\w:]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``")


def plain_text(rst: str) -> str:
    """A docstring line without reStructuredText markup: ``\\`\\`x\\`\\``` and ``:class:`~a.B``` become ``x`` and ``B``."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        return target.rsplit(".", 1)[-1] if match.group(0).split("`", 1)[1].startswith("~") else target

    return _LITERAL.sub(r"\1", _ROLE.sub(role, rst))
