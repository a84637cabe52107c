"""Graceful interruption of training: SIGINT (Ctrl-C) and SIGTERM (``kill``, schedulers).

While :meth:`Trainer.train` runs (in the main thread), the first SIGINT or SIGTERM only sets a
flag. The trainer finishes the optimizer step in progress (and an evaluation already running),
writes a checkpoint at that step and raises :class:`TrainingInterrupted`, which names the signal,
the step and the checkpoint; ``mmfuse train`` turns it into ``resume with: ...`` and exit status
``128 + signal`` (130 for SIGINT, 143 for SIGTERM), as shells do. A second signal stops at
once (:class:`TrainingInterrupted` without a step); the last complete checkpoint is still intact.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal after saving ``checkpoint`` (None: nothing could be saved)."""

    def __init__(self, signum: int, step: int | None, checkpoint: Path | None) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        if step is None:  # a second signal: stopped at once, wherever it was
            super().__init__(f"training stopped at once by a second {name}; no checkpoint saved for the current step")
            return
        saved = f"checkpoint saved: {str(checkpoint)!r}" if checkpoint else "no checkpoint saved"
        super().__init__(f"training interrupted by {name} at step {step}; {saved}")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    def __str__(self) -> str:
        return str(self.args[0])


class SignalCatcher:
    """Context manager: record SIGINT / SIGTERM in :attr:`received` instead of dying.

    Installs its handlers only in the main thread (Python delivers signals there; elsewhere it is
    a no-op) and restores the previous handlers on exit. A second signal raises
    :class:`TrainingInterrupted` (without a step) immediately.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self.restore()
            raise TrainingInterrupted(signum, None, None)
        self.received = signum

    def __enter__(self) -> SignalCatcher:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self.restore()
