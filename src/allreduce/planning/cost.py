"""Each algorithm's cost formula, as the schedule its builder emits (pure Python).

A registry entry names its formula (:attr:`allreduce.planning.registry.AlgorithmInfo.cost`): a
function of this module (or ``"module:function"``) that takes a :class:`Job` and
returns the :class:`~allreduce.planning.traffic.Schedule` of the all-reduce, or with
``job.reduce_only`` of its reducer (the sum left on ``schedule.root``). Each follows
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

import importlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

from allreduce.planning.cost_steps import (
    Piece,
    aligned_split_sizes,
    broadcast,
    concat_each,
    shares_memory,
    split,
    sum_on,
)
from allreduce.planning.devices import gather_candidates, group_by_worker, group_device_names
from allreduce.planning.registry import CPU, AlgorithmInfo, get_algorithm
from allreduce.planning.schedules import halving_doubling_plan, ring_orders, split_sizes, torus_grid
from allreduce.planning.traffic import Schedule

__layer__ = "model"

__all__ = [
    "Job",
    "better",
    "formula",
    "halving_doubling",
    "hierarchical",
    "native_ring",
    "ring",
    "schedule_of",
    "shuffle",
    "simple",
    "torus",
    "trivial",
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

    def level(self, name: str, devices: Sequence[str], shards: int = 1, *, reduce_only: bool) -> Job:
        """The job of a hierarchical level on ``devices``."""
        return replace(
            self,
            info=get_algorithm(name),
            devices=tuple(devices),
            shards=shards,
            worker_groups=None,
            reduce_only=reduce_only,
        )


Formula = Callable[[Job], Schedule]


def formula(info: AlgorithmInfo) -> Formula | None:
    """The cost function ``info.cost`` names, or ``None`` when it has none."""
    if info.cost is None or callable(info.cost):
        return info.cost
    module, _, name = info.cost.rpartition(":")
    return getattr(importlib.import_module(module or __name__), name)


def schedule_of(job: Job) -> Schedule | None:
    """The schedule of ``job`` (an empty one for a single device), or ``None`` without a formula."""
    fn = formula(job.info)
    if fn is None:
        return None
    if len(job.devices) < 2:
        return Schedule(root=job.devices[0] if job.devices else None)
    return fn(job)


# -- the formulas ------------------------------------------------------------------------


def _ring_reduce_scatter(
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


def _ring_all_gather(
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


def ring(job: Job) -> Schedule:
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
        owners = _ring_reduce_scatter(s, 1, devices, order, mine)
        sums = {c: (nbytes, ("sum", s.uid, r, c)) for c, nbytes in mine.items()}
        if shared:
            for c, (nbytes, value) in sums.items():
                held[r, c] = [(devices[owners[c]], nbytes, value)] * n
            continue
        gathered = _ring_all_gather(s, n, devices, order, sums)
        for c, nbytes in mine.items():
            held[r, c] = [(devices[d], nbytes, gathered[d, c]) for d in range(n)]
    ordered = [held[r, c] for r, c, _ in chunks]
    concat_each(s, [[pieces[d] for pieces in ordered] for d in range(n)], devices)
    return s


def native_ring(job: Job) -> Schedule:
    """A ring run inside one kernel (NCCL, TensorFlow's collectives): the textbook
    ``2(p-1)`` steps of ``n/p`` bytes, the sums in the reduce-scatter's steps."""
    devices, n, b = job.devices, len(job.devices), job.itemsize
    sizes = {c: size * b for c, size in enumerate(split_sizes(job.length, n)) if size}
    s = Schedule()
    order = list(range(n))
    _ring_reduce_scatter(s, 0, devices, order, sizes)
    _ring_all_gather(
        s, n - 1, devices, order, {c: (nbytes, ("sum", s.uid, c)) for c, nbytes in sizes.items()}
    )
    return s


def halving_doubling(job: Job) -> Schedule:
    """``rechd``: a fold into the power-of-two core, halving rounds, doubling rounds (one
    concatenation where the core's devices share memory), and the results sent back."""
    devices, b = job.devices, job.itemsize
    plan = halving_doubling_plan(len(devices), job.length)
    s = Schedule()
    for extra, partner in plan.folds:
        r = s.at(0)
        r.hop(devices[extra], devices[partner], job.nbytes)
        r.add(devices[partner], 2, job.nbytes)
    held = [(0, job.length)] * plan.core
    for d, after in zip(plan.distances, plan.intervals):
        r = s.next()
        for i in range(plan.core):
            lower, upper = sorted((after[i], after[i ^ d]))
            split(r, devices[i], [lower[1] - lower[0], upper[1] - upper[0]], b)
            nbytes = (after[i][1] - after[i][0]) * b
            r.hop(devices[i ^ d], devices[i], nbytes)
            r.add(devices[i], 2, nbytes)
        held = after
    core = devices[: plan.core]
    if shares_memory(core):
        ordered = sorted(range(plan.core), key=lambda i: held[i])
        pieces = [(devices[i], (held[i][1] - held[i][0]) * b, ("half", s.uid, i)) for i in ordered]
        concat_each(s, [pieces] * plan.core, core)
    else:
        sizes = [(stop - start) * b for start, stop in held]
        values: list[Hashable] = [("half", s.uid, i) for i in range(plan.core)]
        for k, d in enumerate(reversed(plan.distances)):
            r = s.next()
            for i in range(plan.core):
                r.hop(devices[i ^ d], devices[i], sizes[i ^ d], values[i ^ d])
                r.copy(devices[i], sizes[i] + sizes[i ^ d])
            sizes = [sizes[i] + sizes[i ^ d] for i in range(plan.core)]
            values = [("double", s.uid, k, i) for i in range(plan.core)]
        s.results.update(zip(core, values))
    if plan.folds:
        r = s.next()
        for extra, partner in plan.folds:
            value = s.results[devices[partner]]
            r.hop(devices[partner], devices[extra], job.nbytes, value)
            s.results[devices[extra]] = ("copy", s.uid, devices[extra])
    return s


def shuffle(job: Job) -> Schedule:
    """``pscpu#k`` / ``psgpu#k``: shard ``i`` of every input summed on gather device
    ``i`` of this tensor's group, then joined on every device (or, as a reducer, on the
    group's first gather device, unsharded: a first level takes no shard count)."""
    devices, b = job.devices, job.itemsize
    shards = 1 if job.reduce_only else job.shards
    groups = group_device_names(gather_candidates(devices, job.info.gather_type or CPU), shards)
    group = groups[job.tensor_index % len(groups)]
    sizes = aligned_split_sizes(job.length, shards, b)
    kept = [i for i, size in enumerate(sizes) if size]
    s = Schedule()
    for d in devices:
        split(s.at(0), d, [sizes[i] for i in kept], b)
    for i in kept:
        sum_on(s.at(0), s.at(1), devices, group[i], sizes[i] * b)
    where = [(group[i], sizes[i] * b, ("sum", s.uid, i)) for i in kept]
    if not job.reduce_only:
        concat_each(s, [where] * len(devices), devices)
        return s
    s.root = where[0][0]
    return s


def _one_sum(job: Job, target: str) -> Schedule:
    s = Schedule(root=target)
    sum_on(s.at(0), s.at(1), job.devices, target, job.nbytes)
    if not job.reduce_only:
        broadcast(s.next(), target, job.devices, job.nbytes, ("sum", s.uid))
    return s


def simple(job: Job) -> Schedule:
    """``simple``: one ``add_n`` on the first device, copied to every device."""
    return _one_sum(job, job.devices[0])


def better(job: Job) -> Schedule:
    """``better``: as :func:`simple`, on device ``tensor_index % p``."""
    return _one_sum(job, job.devices[job.tensor_index % len(job.devices)])


def trivial(job: Job) -> Schedule:
    """``trivial``: nothing crosses devices."""
    del job
    return Schedule()


def torus(job: Job) -> Schedule:
    """``torus#r``: reduce-scatter along each row, a ring down each column for the chunk
    its members own, all-gather along each row."""
    devices, b = job.devices, job.itemsize
    grid = torus_grid(len(devices), job.shards)
    columns = len(grid[0])
    sizes = aligned_split_sizes(job.length, columns, b)
    kept = {c: sizes[c] * b for c in range(columns) if sizes[c]}
    s = Schedule()
    for d in devices:
        split(s.at(0), d, [sizes[c] for c in kept], b)
    order = list(range(columns))
    owners: dict[int, int] = {}
    for row in grid:
        owners = _ring_reduce_scatter(s, 1, [devices[i] for i in row], order, kept)
    xring = get_algorithm("xring")
    values: dict[tuple[int, int], Hashable] = {}
    rings = []
    for c, nbytes in kept.items():
        column = tuple(devices[row[owners[c]]] for row in grid)
        rings.append(schedule_of(replace(job, info=xring, devices=column, length=nbytes // b, shards=1)))
        for k, device in enumerate(column):
            values[k, c] = rings[-1].results.get(device, ("sum", s.uid, k, c))
    s.alongside(rings)
    start = len(s.rounds)
    pieces: list[list[Piece]] = []
    for k, row in enumerate(grid):
        chunks = {c: (nbytes, values[k, c]) for c, nbytes in kept.items()}
        gathered = _ring_all_gather(s, start, [devices[i] for i in row], order, chunks)
        pieces += [[(devices[i], n, gathered[p, c]) for c, n in kept.items()] for p, i in enumerate(row)]
    concat_each(s, pieces, devices)
    return s


def hierarchical(job: Job) -> Schedule:
    """``A/B``: ``A`` leaves each worker's sum on one device (its reducer, or its
    all-reduce's first result), ``B`` all-reduces those sums, each worker copies its
    result to its devices: the sum of the three parts."""
    lower, upper = job.info.levels
    devices = job.devices
    groups = job.worker_groups or tuple(tuple(g) for g in group_by_worker(devices))
    reduces = get_algorithm(lower).reducer is not None
    parts, roots = [], []
    for group in groups:
        members = [devices[i] for i in group]
        # Both levels have formulas: the registry gives A/B one only then.
        part = schedule_of(job.level(lower, members, reduce_only=reduces)) or Schedule()
        parts.append(part)
        roots.append(part.root if reduces and part.root is not None else members[0])
    s = Schedule().alongside(parts)
    if len(groups) > 1:
        s.then(schedule_of(job.level(upper, roots, job.shards, reduce_only=False)) or Schedule())
    r = s.next()
    for group, root, part in zip(groups, roots, parts):
        value = part.results.get(root) if len(groups) == 1 else None
        broadcast(r, root, [devices[i] for i in group], job.nbytes, value)
    return s
