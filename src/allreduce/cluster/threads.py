"""Background threads that leave the process's signals to the main thread.

Linux delivers a signal sent to the process (Ctrl-C's ``SIGINT``, ``SIGTERM``) to any
thread that does not block it. Python runs its handlers in the main thread only, but a
main thread blocked in ``time.sleep`` wakes only for a signal delivered to it: one
delivered to a background thread waits until the sleep ends. The library's threads
therefore block both signals.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["MAIN_THREAD_SIGNALS", "daemon_thread"]

#: Signals the library's threads leave to the main thread.
MAIN_THREAD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def daemon_thread(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    """An unstarted daemon thread that runs ``target(*args)`` with
    :data:`MAIN_THREAD_SIGNALS` blocked."""

    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
        target(*args)

    return threading.Thread(target=run, name=name, daemon=True)
