"""2-D torus all-reduce (``torus#r``): its declaration, grid, rounding rule and cost
formula (pure Python). Its builder: ``allreduce.graph.algorithms.torus``."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import replace

from allreduce.planning.algorithms.base import BOTH, SHARDS_DIVIDE, AlgorithmInfo
from allreduce.planning.algorithms.ring import XRING
from allreduce.planning.cost import Job, all_gather_rounds, reduce_scatter_rounds, schedule_of
from allreduce.planning.cost_steps import Piece, concat_each, split
from allreduce.planning.roundings import Roundings
from allreduce.planning.schedules import aligned_split_sizes
from allreduce.planning.traffic import Schedule

__layer__ = "pure"

__all__ = ["TORUS", "torus_cost", "torus_grid", "torus_roundings", "torus_rows"]


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


def torus_roundings(n: int, shards: int) -> Roundings:
    # A row's reduce-scatter (c - 1 steps), a ring down the column (r - 1 steps), one publish.
    rows = torus_rows(n, shards)
    columns = n // rows
    return Roundings(wire=columns + rows - 1, adds=columns + rows - 2)


def torus_cost(job: Job) -> Schedule:
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
        owners = reduce_scatter_rounds(s, 1, [devices[i] for i in row], order, kept)
    values: dict[tuple[int, int], Hashable] = {}
    rings = []
    for c, nbytes in kept.items():
        column = tuple(devices[row[owners[c]]] for row in grid)
        rings.append(schedule_of(replace(job, info=XRING, devices=column, length=nbytes // b, shards=1)))
        for k, device in enumerate(column):
            values[k, c] = rings[-1].results.get(device, ("sum", s.uid, k, c))
    # A column ring whose split copies nothing keeps its empty first round: the rings run in step.
    s.alongside(rings, in_step=True)
    start = len(s.rounds)
    pieces: list[list[Piece]] = []
    for k, row in enumerate(grid):
        chunks = {c: (nbytes, values[k, c]) for c, nbytes in kept.items()}
        gathered = all_gather_rounds(s, start, [devices[i] for i in row], order, chunks)
        pieces += [[(devices[i], n, gathered[p, c]) for c, n in kept.items()] for p, i in enumerate(row)]
    concat_each(s, pieces, devices)
    return s


TORUS = AlgorithmInfo(
    "torus",
    "2-D torus: reduce-scatter along rows, all-reduce down columns, all-gather along rows",
    None,
    BOTH,
    shards="rows of the torus (dividing the device count; default: the largest divisor up to sqrt(n))",
    shard_rule=SHARDS_DIVIDE,
    roundings=torus_roundings,
    cost=torus_cost,
)
