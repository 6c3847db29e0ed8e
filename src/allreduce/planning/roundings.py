"""How many roundings lie on the longest path from an input to a result (pure Python).

Each algorithm's registry entry names its rules here: ``(n, shards) -> Roundings`` for
its all-reduce of ``n >= 2`` inputs and, where it has one, its reducer.
:func:`allreduce.error_bound` turns them into a bound on the error of a compressed sum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from allreduce.planning.schedules import torus_rows

__layer__ = "pure"

__all__ = [
    "Roundings",
    "RoundingsRule",
    "gather_roundings",
    "halving_doubling_roundings",
    "native_roundings",
    "ring_roundings",
    "sum_reducer_roundings",
    "torus_roundings",
]


class Roundings(NamedTuple):
    """The roundings on the longest path from one input to a result (see
    :mod:`allreduce.planning.accuracy`): ``wire``, to the wire type where a compressing wire
    crosses a hop (counting every hop that goes through the wire); ``adds``, of
    additions in the values' own dtype."""

    wire: int
    adds: int


#: What ``roundings`` and ``reducer_roundings`` of an entry are: ``(n, shards) -> Roundings``.
RoundingsRule = Callable[[int, int], Roundings]


def ring_roundings(n: int, shards: int) -> Roundings:
    # A chunk's first piece is received and added at each of the n - 1 steps, then published.
    del shards
    return Roundings(wire=n, adds=n - 1)


def halving_doubling_roundings(n: int, shards: int) -> Roundings:
    # A fold into the power-of-two core, one received half per halving round, the publish.
    del shards
    core = 1 << (n.bit_length() - 1)
    steps = (n > core) + core.bit_length() - 1
    return Roundings(wire=steps + 1, adds=steps)


def gather_roundings(n: int, shards: int) -> Roundings:
    # Each input is received where its shard is summed (one add_n), the sum published.
    del shards
    return Roundings(wire=2, adds=n - 1)


def sum_reducer_roundings(n: int, shards: int) -> Roundings:
    # A first level takes no shard count: each input is received where it is summed.
    del shards
    return Roundings(wire=1, adds=n - 1)


def torus_roundings(n: int, shards: int) -> Roundings:
    # A row's reduce-scatter (c - 1 steps), a ring down the column (r - 1 steps), one publish.
    rows = torus_rows(n, shards)
    columns = n // rows
    return Roundings(wire=columns + rows - 1, adds=columns + rows - 2)


def native_roundings(n: int, shards: int) -> Roundings:
    # Summed inside one kernel (NCCL, collectives): no hop goes through the wire.
    del shards
    return Roundings(wire=0, adds=n - 1)
