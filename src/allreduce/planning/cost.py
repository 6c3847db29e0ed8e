"""The cost formulas' common ground: a job, its schedule, and the ring's rounds (pure Python).

An algorithm's declaration names its formula (:attr:`allreduce.planning.algorithms.base.AlgorithmInfo.cost`):
a function, in the algorithm's module under :mod:`allreduce.planning.algorithms`, that
takes a :class:`Job` and returns the :class:`~allreduce.planning.traffic.Schedule` of
the all-reduce, or with ``job.reduce_only`` of its reducer (the sum left on
``schedule.root``). This module holds what several formulas share: the job, the ring's
rounds and the ring run inside one kernel. Each follows
its builder op by op (chunk sizes, device orders, the hops CPUs of one worker leave
out), so the bytes a schedule moves are the bytes of the graph's cross-device edges.

On ``p`` devices of one kind with ``n`` bytes and no shortcuts, the terms are the
classic ones (Thakur, Rabenseifner & Gropp 2005): ring ``2(p-1)`` steps, ``2n(p-1)/p``
bytes on the critical path and ``n(p-1)/p`` bytes reduced; recursive halving-doubling
``2 log2(p)`` steps with the same bytes, and for ``p`` not a power of two ``2`` more
steps and ``2n`` more bytes (a fold into the power-of-two core and back); a hierarchical
``A/B`` costs the sum of its levels. An algorithm without a formula (``cost=None``) is
tuned by measurement alone.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

from allreduce.planning.algorithms.base import AlgorithmInfo
from allreduce.planning.schedules import split_sizes
from allreduce.planning.traffic import Schedule

__layer__ = "model"

__all__ = [
    "Formula",
    "Job",
    "all_gather_rounds",
    "formula",
    "native_ring",
    "reduce_scatter_rounds",
    "schedule_of",
]


@dataclass(frozen=True)
class Job:
    """One all-reduce to cost: ``length`` elements of ``itemsize`` bytes on each of ``devices``."""

    info: AlgorithmInfo
    devices: tuple[str, ...]
    length: int
    itemsize: int = 4
    shards: int = 1
    tensor_index: int = 0
    worker_groups: tuple[tuple[int, ...], ...] | None = None
    reduce_only: bool = False

    @property
    def nbytes(self) -> int:
        return self.length * self.itemsize

    def level(
        self, info: AlgorithmInfo, devices: Sequence[str], shards: int = 1, *, reduce_only: bool
    ) -> Job:
        """The job of a hierarchical level, ``info``, on ``devices``."""
        return replace(
            self,
            info=info,
            devices=tuple(devices),
            shards=shards,
            worker_groups=None,
            reduce_only=reduce_only,
        )


Formula = Callable[[Job], Schedule]


def formula(info: AlgorithmInfo) -> Formula | None:
    """The cost function of ``info``, or ``None`` when it has none."""
    return info.cost


def schedule_of(job: Job) -> Schedule | None:
    """The schedule of ``job`` (an empty one for a single device), or ``None`` without a formula."""
    fn = formula(job.info)
    if fn is None:
        return None
    if len(job.devices) < 2:
        return Schedule(root=job.devices[0] if job.devices else None)
    return fn(job)


# -- what several formulas share ---------------------------------------------------------


def reduce_scatter_rounds(
    s: Schedule, start: int, devices: Sequence[str], order: Sequence[int], chunks: dict[int, int]
) -> dict[int, int]:
    """Ring reduce-scatter of ``chunks`` (``{position: nbytes}``) from round ``start``;
    returns each chunk's owner (an index of ``devices``)."""
    n = len(order)
    owners = {}
    for c, nbytes in chunks.items():
        src = order[c]
        for step in range(1, n):
            dst = order[(c + step) % n]
            r = s.at(start + step - 1)
            r.hop(devices[src], devices[dst], nbytes)
            r.add(devices[dst], 2, nbytes)
            src = dst
        owners[c] = src
    return owners


def all_gather_rounds(
    s: Schedule,
    start: int,
    devices: Sequence[str],
    order: Sequence[int],
    chunks: dict[int, tuple[int, Hashable]],
) -> dict[tuple[int, int], Hashable]:
    """Ring all-gather of ``chunks`` (``{position: (nbytes, value)}``) from round
    ``start``, each from its owner onwards; returns the value of each chunk on each
    device, ``{(device index, position): value}``."""
    n = len(order)
    held = {}
    for c, (nbytes, value) in chunks.items():
        position = (c + n - 1) % n
        prev = order[position]
        held[prev, c] = value
        for step in range(1, n):
            device = order[(position + step) % n]
            s.at(start + step - 1).hop(devices[prev], devices[device], nbytes, held[prev, c])
            held[device, c] = ("forward", s.uid, devices[device], value)
            prev = device
    return held


def native_ring(job: Job) -> Schedule:
    """A ring run inside one kernel (NCCL, TensorFlow's collectives): the textbook
    ``2(p-1)`` steps of ``n/p`` bytes, the sums in the reduce-scatter's steps."""
    devices, n, b = job.devices, len(job.devices), job.itemsize
    sizes = {c: size * b for c, size in enumerate(split_sizes(job.length, n)) if size}
    s = Schedule()
    order = list(range(n))
    reduce_scatter_rounds(s, 0, devices, order, sizes)
    all_gather_rounds(
        s, n - 1, devices, order, {c: (nbytes, ("sum", s.uid, c)) for c, nbytes in sizes.items()}
    )
    return s
