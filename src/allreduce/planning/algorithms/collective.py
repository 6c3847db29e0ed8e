"""TensorFlow's collective ops (``collective``): its declaration (pure Python). It sums
inside one kernel, so its rounding rule and cost formula are the shared native ones. Its
builder: ``allreduce.graph.algorithms.collective``."""

from __future__ import annotations

from allreduce.planning.algorithms.base import BOTH, AlgorithmInfo
from allreduce.planning.cost import native_ring
from allreduce.planning.roundings import native_roundings

__layer__ = "pure"

__all__ = ["COLLECTIVE"]

COLLECTIVE = AlgorithmInfo(
    "collective",
    "TensorFlow collective ops (CollectiveReduceV2), also across workers",
    None,
    BOTH,
    distinct_devices=True,
    emulable=False,
    failure_note=(
        "once a collective fails, TensorFlow cancels every later collective of this process "
        "('Function was cancelled before it was started'); only a new process runs 'collective' "
        "again, while every other algorithm keeps working here (see docs/concurrency.md)"
    ),
    roundings=native_roundings,
    cost=native_ring,
)
