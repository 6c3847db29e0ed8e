"""What one worker does in an all-reduce across workers, step by step (pure Python).

A :class:`Program` is one worker's part of an algorithm over ``n`` workers and a
vector of ``length`` elements: an initial cut of the vector, then actions in order.
Programs follow the same pure schedules as the one-client builders
(:mod:`allreduce.planning.algorithms`): ring reduce-scatter and all-gather steps
(:func:`~allreduce.planning.algorithms.ring.ring_reduce_scatter_steps`,
:func:`~allreduce.planning.algorithms.ring.ring_all_gather_steps`,
:func:`~allreduce.planning.algorithms.ring.ring_orders`),
:func:`~allreduce.planning.algorithms.halving_doubling.halving_doubling_plan` and
:func:`~allreduce.planning.algorithms.torus.torus_grid`.

Every exchange has a ``slot``: both ends compute the same one, and a worker sends at
most once per slot and direction (the key rule of :mod:`allreduce.spmd.keys`). Each
element's final sum is computed by exactly one worker and copied to the others
unchanged, so results are bitwise identical on every worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from allreduce.planning.algorithms.halving_doubling import halving_doubling_plan
from allreduce.planning.algorithms.ring import ring_all_gather_steps, ring_orders, ring_reduce_scatter_steps
from allreduce.planning.algorithms.torus import torus_grid
from allreduce.planning.schedules import aligned_split_sizes

__layer__ = "pure"

__all__ = ["ALGORITHMS", "Program", "Recv", "Send", "SumCollected", "program", "simulate"]

#: The algorithms that have a per-worker program (``collective`` runs as one op).
ALGORITHMS = ("xring", "rechd", "torus", "pscpu")


class Send(NamedTuple):
    """Send elements ``[start, stop)`` as this worker holds them to task ``peer``."""

    peer: int
    start: int
    stop: int
    slot: int


class Recv(NamedTuple):
    """Receive ``[start, stop)`` from ``peer``: ``"add"`` it to what this worker holds
    (received value first), ``"set"`` it in place of it, or ``"collect"`` it for a
    later :class:`SumCollected`."""

    peer: int
    start: int
    stop: int
    slot: int
    mode: str


class SumCollected(NamedTuple):
    """Replace ``[start, stop)`` by the sum, in task order, of this worker's own values
    and those collected from the other tasks."""

    start: int
    stop: int


Action = Send | Recv | SumCollected


class Program(NamedTuple):
    """One worker's part: ``cuts`` (split the vector there first), ``actions`` in order,
    and ``slots``, the slots every worker's program of this all-reduce uses."""

    cuts: tuple[int, ...]
    actions: tuple[Action, ...]
    slots: int


def _bounds(start: int, sizes: list[int]) -> list[tuple[int, int]]:
    out = []
    for size in sizes:
        out.append((start, start + size))
        start += size
    return out


def _ring(members: list[int], me: int, chunks: list[tuple[int, int]], slot: int) -> tuple[list[Action], int]:
    """A ring reduce-scatter then all-gather of ``chunks`` (one per ring position) over
    ``members`` (tasks in ring order), from ``me``'s side; returns actions and next slot."""
    n = len(members)
    if me not in members or n == 1:
        return [], slot + 2 * (n - 1)
    p = members.index(me)
    actions: list[Action] = []
    for phase, mode in ((ring_reduce_scatter_steps(n), "add"), (ring_all_gather_steps(n), "set")):
        for step in phase:
            send, recv = step[p], step[(p - 1) % n]
            a, b = chunks[send.chunk]
            if b > a:
                actions.append(Send(members[send.dst], a, b, slot))
            a, b = chunks[recv.chunk]
            if b > a:
                actions.append(Recv(members[recv.src], a, b, slot, mode))
            slot += 1
    return actions, slot


def _xring(n: int, me: int, length: int, itemsize: int, shards: int) -> Program:
    cuts, actions, slot = [], [], 0
    start = 0
    for order, sub in zip(ring_orders(n, shards), aligned_split_sizes(length, shards, itemsize)):
        # Chunk c starts at ring position c (as in the one-client ring).
        chunks = _bounds(start, aligned_split_sizes(sub, n, itemsize))
        cuts += [a for a, _ in chunks]
        more, slot = _ring(order, me, chunks, slot)
        actions += more
        start += sub
    return Program(tuple(sorted(set(cuts) - {0})), tuple(actions), slot)


def _rechd(n: int, me: int, length: int) -> Program:
    plan = halving_doubling_plan(n, length)
    actions: list[Action] = []
    for extra, partner in plan.folds:
        if me == extra:
            actions.append(Send(partner, 0, length, 0))
        elif me == partner:
            actions.append(Recv(extra, 0, length, 0, "add"))
    slot = 1
    if me < plan.core:
        for d, after in zip(plan.distances, plan.intervals):
            partner = me ^ d
            actions.append(Send(partner, *after[partner], slot))
            actions.append(Recv(partner, *after[me], slot, "add"))
            slot += 1
        held = plan.intervals[-1] if plan.intervals else [(0, length)] * plan.core
        for r in reversed(range(len(plan.distances))):
            partner = me ^ plan.distances[r]
            before = plan.intervals[r - 1] if r else [(0, length)] * plan.core
            actions.append(Send(partner, *held[me], slot))
            actions.append(Recv(partner, *held[partner], slot, "set"))
            held = before
            slot += 1
    slot = 1 + 2 * len(plan.distances)
    for extra, partner in plan.folds:
        if me == partner:
            actions.append(Send(extra, 0, length, slot))
        elif me == extra:
            actions.append(Recv(partner, 0, length, slot, "set"))
    actions = [a for a in actions if a.stop > a.start]
    return Program((), tuple(actions), slot + 1)


def _torus(n: int, me: int, length: int, itemsize: int, rows: int) -> Program:
    grid = torus_grid(n, rows)
    columns = len(grid[0])
    chunks = _bounds(0, aligned_split_sizes(length, columns, itemsize))
    row = next(r for r in grid if me in r)
    q = row.index(me)
    rs_slots = columns - 1
    ring_actions, _ = _ring(row, me, chunks, 0)
    # The row ring's reduce-scatter, then the column ring, then the row all-gather with
    # its slots moved past the column ring's.
    reduce_scatter = [a for a in ring_actions if a.slot < rs_slots]
    all_gather = [a for a in ring_actions if a.slot >= rs_slots]
    owned = chunks[(q + 1) % columns]
    column = [r[q] for r in grid]
    sub = _bounds(owned[0], aligned_split_sizes(owned[1] - owned[0], len(column), itemsize))
    column_actions, next_slot = _ring(column, me, sub, rs_slots)
    shift = next_slot - rs_slots
    all_gather = [a._replace(slot=a.slot + shift) for a in all_gather]
    cuts = sorted({a for a, _ in chunks} - {0})
    return Program(tuple(cuts), tuple(reduce_scatter + column_actions + all_gather), 2 * rs_slots + shift)


def _shuffle(n: int, me: int, length: int, itemsize: int, shards: int, index: int) -> Program:
    shard_bounds = _bounds(0, aligned_split_sizes(length, shards, itemsize))
    actions: list[Action] = []
    for j, (a, b) in enumerate(shard_bounds):
        if b == a:
            continue
        root = (index * shards + j) % n
        if me == root:
            actions += [Recv(q, a, b, j, "collect") for q in range(n) if q != me]
            actions.append(SumCollected(a, b))
            actions += [Send(q, a, b, shards + j * n + q) for q in range(n) if q != me]
        else:
            actions.append(Send(root, a, b, j))
            actions.append(Recv(root, a, b, shards + j * n + me, "set"))
    cuts = sorted({a for a, _ in shard_bounds} - {0})
    return Program(tuple(cuts), tuple(actions), shards + shards * n)


def program(
    alg: str, n: int, me: int, length: int, itemsize: int, shards: int = 1, index: int = 0
) -> Program:
    """Worker ``me``'s program of ``alg`` over ``n`` workers for ``length`` elements of
    ``itemsize`` bytes; ``shards`` is the spec's ``#k``, ``index`` the bucket's position
    among those of its spec range (``pscpu`` picks its root worker round-robin).

    Raises:
        ValueError: ``alg`` has no per-worker program, or ``me`` is not in ``0..n-1``.
    """
    if not 0 <= me < n:
        raise ValueError(f"task {me} is not one of the {n} workers")
    if alg == "xring":
        return _xring(n, me, length, itemsize, shards)
    if alg == "rechd":
        return _rechd(n, me, length)
    if alg == "torus":
        return _torus(n, me, length, itemsize, shards)
    if alg == "pscpu":
        return _shuffle(n, me, length, itemsize, min(shards, n), index)
    raise ValueError(
        f"algorithm {alg!r} has no SPMD program; use one of {', '.join(ALGORITHMS)} or collective"
    )


def _step(action: Action, w: int, held: list, collected: list, pending: dict, wire: Any) -> bool:
    """Runs one action of worker ``w`` in :func:`simulate`; ``False`` if it must wait."""
    if isinstance(action, Send):
        key = (w, action.peer, action.slot)
        if key in pending:
            raise RuntimeError(f"two sends with one key {key}")
        piece = held[w][action.start : action.stop]
        if wire is not None:  # the sender keeps the packet it sent, as the emitter does
            piece = [wire(x) for x in piece]
            held[w][action.start : action.stop] = piece
        pending[key] = piece
        return True
    a, b = action.start, action.stop
    if isinstance(action, SumCollected):
        parts = {**collected[w], w: held[w][a:b]}
        held[w][a:b] = [sum(col) for col in zip(*(parts[q] for q in sorted(parts)))]
        return True
    key = (action.peer, w, action.slot)
    if key not in pending:
        return False
    value = pending.pop(key)
    if len(value) != b - a:
        raise RuntimeError(f"size mismatch at {key}")
    if action.mode == "add":
        held[w][a:b] = [x + y for x, y in zip(value, held[w][a:b])]
    elif action.mode == "set":
        held[w][a:b] = value
    else:
        collected[w][action.peer] = value
    return True


def simulate(
    alg: str,
    inputs: list[list[float]],
    itemsize: int = 4,
    shards: int = 1,
    index: int = 0,
    wire: Callable[[float], float] | None = None,
) -> list[list[float]]:
    """Runs every worker's program on plain lists (``inputs[w]`` is worker ``w``'s
    vector) and returns each worker's result: a check of the programs without a graph.

    Exchanges are matched by ``(src, dst, slot)``. ``wire`` rounds every value sent
    (a compressing wire), and the sender keeps the rounded values in place of its own.

    Raises:
        RuntimeError: the programs do not match up (a send nobody receives, two sends
            with one key, sizes that differ, or a deadlock).
    """
    n, length = len(inputs), len(inputs[0])
    programs = [program(alg, n, w, length, itemsize, shards, index) for w in range(n)]
    held = [list(map(float, v)) for v in inputs]
    collected: list[dict[int, list[float]]] = [{} for _ in range(n)]
    pending: dict[tuple[int, int, int], list[float]] = {}
    position = [0] * n
    while any(position[w] < len(programs[w].actions) for w in range(n)):
        progressed = False
        for w in range(n):
            actions = programs[w].actions
            while position[w] < len(actions) and _step(
                actions[position[w]], w, held, collected, pending, wire
            ):
                position[w] += 1
                progressed = True
        if not progressed:
            raise RuntimeError(f"deadlock at {position}")
    if pending:
        raise RuntimeError(f"sends nobody received: {sorted(pending)}")
    return held
