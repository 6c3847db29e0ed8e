"""Measuring cells with the benchmark's own driver (needs TensorFlow).

A probe all-reduces one band's tensors with several specs side by side:
:func:`allreduce.measure.driver.run_case` traces each spec's step once, checks its first
and last results on every device against the exact sums, and times the steps
round-robin over the specs, so that background load hits all of them alike. A spec that
cannot run here or gives a wrong result is reported as ``None`` and never chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from allreduce.measure.cases import Case
from allreduce.measure.contenders import Setup, SpecContender
from allreduce.measure.driver import run_case
from allreduce.planning.devices import group_by_worker, parse_device_name

__all__ = ["Measurer", "logically_split"]

logger = logging.getLogger(__name__)


def logically_split(devices: Sequence[str]) -> bool:
    """Whether ``devices`` of this process are more than its physical devices of that type."""
    from allreduce.core._tf import tf

    if len(group_by_worker(devices)) > 1:
        return False
    kind = parse_device_name(devices[0]).device_type or "CPU"
    return len(tf.config.list_physical_devices(kind)) < len(set(devices))


class Measurer:
    """Times specs on tensors of given sizes on ``devices`` (``dtype``: a benchmark dtype name)."""

    def __init__(self, devices: Sequence[str], dtype: str, *, warmup: int = 2, iters: int = 7) -> None:
        workers = len(group_by_worker(devices))
        kind = parse_device_name(devices[0]).device_type or "CPU"
        self.setup = Setup(
            devices=tuple(devices), device_type=kind, workers=workers, witness=workers > 1 or kind != "CPU"
        )
        self.dtype = dtype
        self.warmup = warmup
        self.iters = iters

    def __call__(self, sizes: Sequence[int], specs: Sequence[str]) -> dict[str, list[float] | None]:
        """Each spec's timed steps on one step's worth of tensors of ``sizes``; ``None``
        for a spec that did not run or was not exact."""
        case = Case(f"{len(sizes)} tensors", tuple((s,) for s in sizes), self.dtype)
        contenders = [SpecContender(spec, required=False) for spec in specs]
        results = run_case(case, contenders, self.setup, warmup=self.warmup, iters=self.iters)
        out: dict[str, list[float] | None] = {}
        for r in results:
            if r.timed and r.ok:
                out[r.name] = list(r.samples_s)
                continue
            reason = r.error or r.skipped or f"{r.wrong} wrong elements"
            logger.warning("tuning leaves out %s: %s", r.name, reason)
            out[r.name] = None
        return out
