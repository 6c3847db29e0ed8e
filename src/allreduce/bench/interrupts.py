"""Ctrl-C for ``allreduce-bench``, never lost.

Python raises ``KeyboardInterrupt`` wherever the main thread is
when ``SIGINT`` arrives, and inside a finalizer (TensorFlow's ``AtomicFunction.__del__``,
run by the garbage collector) the exception is printed as "Exception ignored" and
dropped. So while cases are measured, ``SIGINT`` only sets a flag that is checked after
every step (a second one raises at once); elsewhere it raises as usual and also sets
the flag, so that one swallowed by a finalizer still stops the run at the next check.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Interrupts"]


class Interrupts:
    """Ctrl-C while a run is on: ``SIGINT`` sets :attr:`received`; it raises
    ``KeyboardInterrupt`` at once except while :meth:`deferred`, where :meth:`check`
    raises it. A ``KeyboardInterrupt`` that a finalizer swallowed is not printed.

    Installed only over Python's own handler (a process started with ``SIGINT``
    ignored, or one whose embedder set a handler, keeps it), in the main thread.
    """

    def __init__(self) -> None:
        self.received = False
        self._deferring = False
        self._saved: Any = None
        self._hook: Callable[[Any], None] | None = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        first = not self.received
        self.received = True
        if not (self._deferring and first):
            raise KeyboardInterrupt

    def _unraisable(self, unraisable: Any) -> None:
        if self._hook is not None and not isinstance(unraisable.exc_value, KeyboardInterrupt):
            self._hook(unraisable)

    def check(self) -> None:
        """Raises ``KeyboardInterrupt`` if ``SIGINT`` arrived (and was not raised, or was swallowed)."""
        if self.received:
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within: the first ``SIGINT`` waits for :meth:`check`."""
        self._deferring = True
        try:
            self.check()
            yield
        finally:
            self._deferring = False

    def __enter__(self) -> Interrupts:
        import threading

        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._saved = signal.signal(signal.SIGINT, self._on_sigint)
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            signal.signal(signal.SIGINT, self._saved)
        if self._hook is not None:
            sys.unraisablehook = self._hook
