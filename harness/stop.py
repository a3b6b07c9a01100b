"""Stopping a run on SIGINT/SIGTERM: at the next safe point, or at once on a second signal.

Safe points are where the loop checks (:meth:`StopSignals.checkpoint`: before each model call,
between tool calls, between iterations). The waits that can last minutes (a model call, a command in
the sandbox, a scoring) are entered with :meth:`StopSignals.interruptible`: a signal that arrives
inside one ends the wait right away, since nothing of the record is being written there; what the
wait was doing is redone on resume (an interrupted iteration starts again from the last submission;
an unscored submission is scored).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class StopRequested(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt: no ``except Exception`` on
    the way out may swallow it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StopSignals:
    """Installs the handlers for its ``with`` block (main thread only; elsewhere it only counts)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._waiting = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise StopRequested(f"{name} (a second signal: stopped at once)")
        self.requested = name
        if self._waiting:
            raise StopRequested(name)

    def checkpoint(self) -> None:
        """A safe point: stop here if a signal came."""
        if self.requested is not None:
            raise StopRequested(self.requested)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A wait that a signal may cut short."""
        self.checkpoint()
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1
