"""Chunking that several algorithms share (pure Python).

Near-equal and aligned chunk sizes, and when a CPU sum is cut in halves. Each
algorithm's own schedule (device orders, plans, grids) lives in its module under
:mod:`allreduce.planning.algorithms`. The TensorFlow layer follows these plans op by op;
keeping them here lets the schedules be checked by simulation, without building a graph.
"""

from __future__ import annotations

from collections.abc import Sequence

from allreduce.planning.devices import parse_device_name, shares_memory

__layer__ = "pure"

__all__ = [
    "ALIGN_BYTES",
    "HALVES_MAX_BYTES",
    "HALVES_MIN_BYTES",
    "HOP_MIN_BYTES",
    "aligned_split_sizes",
    "halves_hosts",
    "split_sizes",
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
