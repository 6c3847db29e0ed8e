"""Callbacks run when TensorFlow's eager context changes (pure Python).

Connecting to a cluster or leaving one gives the process new devices: state keyed by
the old ones (a collective's group keys, cached ``tf.function``s) is stale from then on.
Modules that keep such state register a reset here; :mod:`allreduce.cluster` calls
:func:`context_changed` after every connect and disconnect, and never needs to know
which modules listen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["context_changed", "on_context_change"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_callbacks: list[Callable[[], None]] = []


def on_context_change(callback: Callable[[], None]) -> Callable[[], None]:
    """Registers ``callback`` (once) to run after every change of the eager context.

    Returns the callback, so that it can decorate a function.

    Raises:
        TypeError: ``callback`` is not callable.
    """
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}: {callback!r}")
    with _lock:
        if callback not in _callbacks:
            _callbacks.append(callback)
    return callback


def context_changed() -> None:
    """Runs every registered reset, in registration order; one that raises is logged
    and the others still run."""
    with _lock:
        callbacks = list(_callbacks)
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("reset %r failed after the eager context changed", callback)
