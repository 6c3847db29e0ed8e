"""Ring all-reduce (``xring#k``): its declaration, device orders, step schedules, rounding
rule and cost formula (pure Python). Its builder: ``allreduce.graph.algorithms.ring``."""

from __future__ import annotations

from typing import NamedTuple

from allreduce.planning.algorithms.base import BOTH, AlgorithmInfo
from allreduce.planning.cost import Job, all_gather_rounds, reduce_scatter_rounds
from allreduce.planning.cost_steps import Piece, concat_each, shares_memory, split
from allreduce.planning.roundings import Roundings
from allreduce.planning.schedules import aligned_split_sizes
from allreduce.planning.traffic import Schedule

__layer__ = "pure"

__all__ = [
    "XRING",
    "Transfer",
    "ring_all_gather_steps",
    "ring_cost",
    "ring_orders",
    "ring_reduce_scatter_steps",
    "ring_roundings",
]


def ring_orders(num_devices: int, num_rings: int) -> list[list[int]]:
    """Device orders of ``num_rings`` rings over ``num_devices`` devices.

    Ring ``r`` starts ``r * num_devices // num_rings`` places further on, and odd rings
    run the other way, so that the rings load different links and devices first.

    Raises:
        ValueError: a count below 1.
    """
    if num_devices < 1 or num_rings < 1:
        raise ValueError(f"need at least one device and one ring, got {num_devices}, {num_rings}")
    orders = []
    for r in range(num_rings):
        start = (r * num_devices) // num_rings
        order = [(start + i) % num_devices for i in range(num_devices)]
        if r % 2 == 1:
            order = [order[0], *reversed(order[1:])]
        orders.append(order)
    return orders


class Transfer(NamedTuple):
    """Ring position ``src`` sends chunk ``chunk`` to ring position ``dst``."""

    src: int
    dst: int
    chunk: int


def ring_reduce_scatter_steps(n: int) -> list[list[Transfer]]:
    """The ``n - 1`` steps of a ring reduce-scatter over ``n`` positions and chunks.

    At step ``s`` position ``p`` sends its partial sum of chunk ``(p - s) % n`` to
    position ``p + 1``, which adds its own piece. Afterwards position ``p`` holds the
    full sum of chunk ``(p + 1) % n``.
    """
    return [[Transfer(p, (p + 1) % n, (p - s) % n) for p in range(n)] for s in range(n - 1)]


def ring_all_gather_steps(n: int) -> list[list[Transfer]]:
    """The ``n - 1`` steps of a ring all-gather that follows the reduce-scatter.

    At step ``s`` position ``p`` forwards the full chunk ``(p + 1 - s) % n`` to ``p + 1``.
    """
    return [[Transfer(p, (p + 1) % n, (p + 1 - s) % n) for p in range(n)] for s in range(n - 1)]


def ring_roundings(n: int, shards: int) -> Roundings:
    # A chunk's first piece is received and added at each of the n - 1 steps, then published.
    del shards
    return Roundings(wire=n, adds=n - 1)


def ring_cost(job: Job) -> Schedule:
    """``xring#k``: ``k`` rings, each a reduce-scatter then an all-gather (left out
    between CPUs of one worker, which take every chunk from its owner)."""
    devices, n, b = job.devices, len(job.devices), job.itemsize
    subs = aligned_split_sizes(job.length, job.shards, b)
    chunks = [
        (r, c, size)
        for r, sub in enumerate(subs)
        for c, size in enumerate(aligned_split_sizes(sub, n, b))
        if size
    ]
    s = Schedule()
    for d in devices:
        split(s.at(0), d, [size for _, _, size in chunks], b)
    shared = shares_memory(devices)
    held: dict[tuple[int, int], list[Piece]] = {}
    for r, order in enumerate(ring_orders(n, job.shards)):
        mine = {c: size * b for ring_, c, size in chunks if ring_ == r}
        owners = reduce_scatter_rounds(s, 1, devices, order, mine)
        sums = {c: (nbytes, ("sum", s.uid, r, c)) for c, nbytes in mine.items()}
        if shared:
            for c, (nbytes, value) in sums.items():
                held[r, c] = [(devices[owners[c]], nbytes, value)] * n
            continue
        gathered = all_gather_rounds(s, n, devices, order, sums)
        for c, nbytes in mine.items():
            held[r, c] = [(devices[d], nbytes, gathered[d, c]) for d in range(n)]
    ordered = [held[r, c] for r, c, _ in chunks]
    concat_each(s, [[pieces[d] for pieces in ordered] for d in range(n)], devices)
    return s


XRING = AlgorithmInfo(
    "xring",
    "ring all-reduce: reduce-scatter then all-gather around the devices",
    None,
    BOTH,
    shards="independent subchunk rings",
    roundings=ring_roundings,
    cost=ring_cost,
)
