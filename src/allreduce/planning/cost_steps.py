"""What every cost formula shares: the steps of :mod:`allreduce.graph.algorithms.base`, as
schedule entries instead of ops (pure Python).

Each helper records what its namesake in ``allreduce.graph.algorithms.base`` emits: which
hops a split, a sum, a concatenation or a broadcast makes between which devices, and
which bytes it adds or copies, including the hops CPUs of one worker leave out.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from allreduce.planning.algorithms.base import CPU
from allreduce.planning.devices import other_cpu_of_worker, parse_device_name, shares_memory
from allreduce.planning.schedules import ALIGN_BYTES, HOP_MIN_BYTES, aligned_split_sizes, halves_hosts
from allreduce.planning.traffic import Round, Schedule

__layer__ = "model"

__all__ = [
    "ALIGN_BYTES",
    "HOP_MIN_BYTES",
    "Piece",
    "aligned_split_sizes",
    "broadcast",
    "concat_each",
    "shares_memory",
    "split",
    "sum_on",
]


def split(r: Round, device: str, sizes: Sequence[int], itemsize: int) -> None:
    """``split_on``: a view when every piece is a multiple of the alignment, else a copy."""
    granule = max(1, ALIGN_BYTES // itemsize)
    if len(sizes) > 1 and not (granule > 1 and all(s % granule == 0 for s in sizes)):
        r.copy(device, sum(sizes) * itemsize)


def sum_on(r: Round, after: Round, sources: Sequence[str], target: str, nbytes: int) -> None:
    """``sum_on``: every value sent to ``target`` and summed there in one ``add_n``; a
    large CPU sum first hands its own inputs to another CPU of the worker (``r``), and
    takes them back in ``after``; a sum that :func:`allreduce.planning.schedules.halves_hosts`
    cuts in two adds each half on its host CPU (``r``) and the two partial sums on
    ``target`` (``after``)."""
    hosts = halves_hosts(sources, target, nbytes)
    if hosts is not None:
        half = len(sources) // 2
        for host, members in zip(hosts, (sources[:half], sources[half:])):
            for src in members:
                r.hop(src, host, nbytes)
            r.add(host, len(members), nbytes)
            after.hop(host, target, nbytes)
        after.add(target, 2, nbytes)
        return
    hop = None
    if len(sources) > 2 and nbytes >= HOP_MIN_BYTES:
        hop = other_cpu_of_worker(target, sources)
    wanted = parse_device_name(target)
    for src in sources:
        if hop is not None and parse_device_name(src) == wanted:
            r.hop(src, hop, nbytes)
            after.hop(hop, target, nbytes)
        else:
            after.hop(src, target, nbytes)
    after.add(target, len(sources), nbytes)


#: A piece to join: ``(where it sits, its bytes, the value it is)``.
Piece = tuple[str, int, Hashable]


def concat_each(s: Schedule, pieces: Sequence[Sequence[Piece]], devices: Sequence[str]) -> None:
    """``concat_each`` in a new round: ``pieces[i]`` are ``(where, nbytes, value)`` joined
    on ``devices[i]``; the first CPU of a worker joins once and its other CPUs take its
    result. Sets ``s.results``."""
    r = s.next()
    if all(len(p) == 1 for p in pieces):
        for (where, nbytes, value), device in zip((p[0] for p in pieces), devices):
            r.hop(where, device, nbytes, value)
            s.results[device] = value if where == device else ("open", s.uid, device)
        return
    first: dict[tuple[str, int, int], int] = {}
    for i, device in enumerate(devices):
        parsed = parse_device_name(device)
        j = first.setdefault(parsed.worker, i) if parsed.device_type == CPU else i
        total = sum(n for _, n, _ in pieces[i])
        if j != i:
            r.hop(devices[j], device, total, ("concat", s.uid, devices[j]))
            s.results[device] = ("copy", s.uid, device)
            continue
        for where, nbytes, value in pieces[i]:
            r.hop(where, device, nbytes, value)
        r.copy(device, total)
        s.results[device] = ("concat", s.uid, device)


def broadcast(r: Round, src: str, devices: Sequence[str], nbytes: int, value: Hashable = None) -> None:
    for device in devices:
        r.hop(src, device, nbytes, value)
