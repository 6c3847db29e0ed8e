"""Chunking and communication schedules of the algorithms (pure Python).

The TensorFlow layer follows these plans op by op; keeping them here lets the
schedules be checked by simulation, without building a graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from allreduce.planning.devices import parse_device_name, shares_memory

__layer__ = "pure"

__all__ = [
    "ALIGN_BYTES",
    "HALVES_MAX_BYTES",
    "HALVES_MIN_BYTES",
    "HOP_MIN_BYTES",
    "HalvingDoublingPlan",
    "Transfer",
    "aligned_split_sizes",
    "halves_hosts",
    "halving_doubling_plan",
    "ring_all_gather_steps",
    "ring_orders",
    "ring_reduce_scatter_steps",
    "split_sizes",
    "torus_grid",
    "torus_rows",
]


def split_sizes(length: int, parts: int) -> list[int]:
    """Near-equal sizes of ``parts`` pieces that add up to ``length``.

    The first ``length % parts`` pieces are one element longer; pieces may be empty.

    Raises:
        ValueError: ``length`` is negative or ``parts`` below 1.
    """
    if length < 0:
        raise ValueError(f"length must be non-negative, got {length}")
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    base, extra = divmod(length, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


#: TensorFlow's ``Split`` hands out slices of its input's buffer, instead of copies,
#: when each row it splits off spans a multiple of Eigen's alignment (at most 64 bytes).
ALIGN_BYTES = 64

#: Sums of tensors this large hand inputs on the summing CPU to another CPU
#: (:func:`allreduce.graph.algorithms.base.sum_on`).
HOP_MIN_BYTES = 1 << 20

#: A CPU sum of four values or more whose ``add_n`` would read and write this many bytes
#: in all (inputs and result), at least the first and below the second, is cut in two
#: halves summed side by side (:func:`halves_hosts`). From about 1.1 MiB read and written
#: Eigen splits one ``add_n`` over two threads, which costs more than it saves until
#: about 1.8 MiB on 2 cores (docs/benchmark.md); the adds of the halves stay below about 1.1 MiB.
HALVES_MIN_BYTES = 9 << 17
HALVES_MAX_BYTES = 7 << 18


def halves_hosts(sources: Sequence[str], target: str, nbytes: int) -> tuple[str, str] | None:
    """The two CPUs that sum the halves ``sources[:n // 2]`` and ``sources[n // 2:]`` of a
    sum of values of ``nbytes`` each on ``target``, or ``None`` for one ``add_n``.

    A half is summed on the first CPU among its sources other than ``target`` (where
    TensorFlow's optimizer would fold it into the final add), and ``target`` adds the two
    partial sums. Only for at least four sources, every one a CPU of ``target``'s worker
    (copies between them move no bytes), with a total of ``(n + 1) * nbytes`` in
    [:data:`HALVES_MIN_BYTES`, :data:`HALVES_MAX_BYTES`).
    """
    n = len(sources)
    if n < 4 or not HALVES_MIN_BYTES <= (n + 1) * nbytes < HALVES_MAX_BYTES:
        return None
    if not shares_memory([*sources, target]):
        return None
    avoid = {parse_device_name(target)}
    hosts = []
    for half in (sources[: n // 2], sources[n // 2 :]):
        host = next((d for d in half if parse_device_name(d) not in avoid), None)
        if host is None:
            return None
        avoid.add(parse_device_name(host))
        hosts.append(host)
    return hosts[0], hosts[1]


def aligned_split_sizes(length: int, parts: int, itemsize: int) -> list[int]:
    """Near-equal sizes of ``parts`` pieces of ``length`` elements, each a multiple of
    :data:`ALIGN_BYTES` when ``length`` is, so that a split copies nothing; otherwise
    :func:`split_sizes`.

    Raises:
        ValueError: as :func:`split_sizes`.
    """
    granule = max(1, ALIGN_BYTES // itemsize)
    if length % granule:
        return split_sizes(length, parts)
    return [granule * size for size in split_sizes(length // granule, parts)]


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


class HalvingDoublingPlan(NamedTuple):
    """Recursive halving-doubling over any number of devices.

    ``core`` devices (the largest power of two not above the count) run the
    algorithm; each extra device ``core + e`` first folds its input into device ``e``
    (``folds`` lists ``(extra, partner)``) and gets the result back at the end.
    ``distances`` are the halving rounds' partner distances (doubling runs them in
    reverse); ``intervals[r][i]`` is the ``[start, stop)`` element interval that core
    device ``i`` holds reduced after halving round ``r``.
    """

    core: int
    folds: list[tuple[int, int]]
    distances: list[int]
    intervals: list[list[tuple[int, int]]]


def halving_doubling_plan(num_devices: int, length: int) -> HalvingDoublingPlan:
    """Plans recursive halving-doubling of ``length`` elements over ``num_devices``.

    Raises:
        ValueError: ``num_devices`` below 1 or ``length`` negative.
    """
    if num_devices < 1:
        raise ValueError(f"num_devices must be at least 1, got {num_devices}")
    if length < 0:
        raise ValueError(f"length must be non-negative, got {length}")
    core = 1 << (num_devices.bit_length() - 1)
    folds = [(core + e, e) for e in range(num_devices - core)]
    distances = []
    d = core // 2
    while d >= 1:
        distances.append(d)
        d //= 2
    current = [(0, length)] * core
    intervals = []
    for d in distances:
        after = []
        for i in range(core):
            start, stop = current[i]
            middle = start + (stop - start + 1) // 2
            after.append((start, middle) if i & d == 0 else (middle, stop))
        intervals.append(after)
        current = after
    return HalvingDoublingPlan(core, folds, distances, intervals)


def torus_rows(num_devices: int, rows: int = 1) -> int:
    """The row count of a 2-D torus over ``num_devices`` devices.

    ``rows == 1`` chooses: the largest divisor of ``num_devices`` not above its square
    root (1 for a prime count, where the torus is a single ring).

    Raises:
        ValueError: ``num_devices`` or ``rows`` below 1, or ``rows`` does not divide
            ``num_devices``.
    """
    if num_devices < 1 or rows < 1:
        raise ValueError(f"need at least one device and one row, got {num_devices}, {rows}")
    if rows == 1:
        return max(r for r in range(1, math.isqrt(num_devices) + 1) if num_devices % r == 0)
    if num_devices % rows:
        raise ValueError(f"torus#{rows}: {rows} rows do not divide {num_devices} devices")
    return rows


def torus_grid(num_devices: int, rows: int) -> list[list[int]]:
    """Device indices of a ``rows`` x ``num_devices // rows`` torus, row by row.

    Raises:
        ValueError: as :func:`torus_rows`.
    """
    rows = torus_rows(num_devices, rows)
    columns = num_devices // rows
    return [list(range(r * columns, (r + 1) * columns)) for r in range(rows)]
