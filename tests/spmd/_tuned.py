"""What the SPMD workers of the tuning test run (module-level, so that ``launch`` can pickle it)."""

from __future__ import annotations

import logging

import numpy as np


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def auto_after_tuning(elements: int, specs: list[str]) -> dict:
    """Asks the SPMD tuner again (it must answer from the cache), then all-reduces with
    ``spec="auto"``; returns the tuner's entry, the resolution's log line and the sum."""
    from allreduce import spmd
    from allreduce.tuning.spmd import tune_spmd_entry

    worker = spmd.start()
    import tensorflow as tf

    entry = tune_spmd_entry([elements], specs=specs, devices_per_worker=1, budget_s=5)
    handler = _Lines()
    logger = logging.getLogger("allreduce.selection.auto")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    x = tf.constant(np.arange(elements, dtype=np.float32) * (worker.rank + 1))
    (out,) = spmd.all_reduce([x], "auto", timeout_s=60)
    return {"cached": entry["cached"], "spec": entry["spec"], "log": handler.lines, "sum": np.asarray(out)}
