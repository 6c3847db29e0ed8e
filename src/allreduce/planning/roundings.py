"""How many roundings lie on the longest path from an input to a result (pure Python).

An algorithm's declaration names its rules (:mod:`allreduce.planning.algorithms`):
``(n, shards) -> Roundings`` for its all-reduce of ``n >= 2`` inputs and, where it has
one, its reducer. The rules here are those several algorithms share.
:func:`allreduce.error_bound` turns them into a bound on the error of a compressed sum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

__layer__ = "pure"

__all__ = [
    "Roundings",
    "RoundingsRule",
    "gather_roundings",
    "native_roundings",
    "sum_reducer_roundings",
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


def gather_roundings(n: int, shards: int) -> Roundings:
    # Each input is received where its shard is summed (one add_n), the sum published.
    del shards
    return Roundings(wire=2, adds=n - 1)


def sum_reducer_roundings(n: int, shards: int) -> Roundings:
    # A first level takes no shard count: each input is received where it is summed.
    del shards
    return Roundings(wire=1, adds=n - 1)


def native_roundings(n: int, shards: int) -> Roundings:
    # Summed inside one kernel (NCCL, collectives): no hop goes through the wire.
    del shards
    return Roundings(wire=0, adds=n - 1)
