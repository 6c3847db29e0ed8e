"""2-D torus all-reduce (``torus#r``; Mikami et al. 2018, Horovod's torus all-reduce).

The devices form ``r`` rows of ``n / r`` (:func:`allreduce.planning.algorithms.torus.torus_grid`):
each row reduce-scatters its chunks around a ring, each column all-reduces the chunk
its members own (a ring over ``r`` devices), and each row all-gathers the results. A
device sends ``2 (n - 1) / n`` of the vector in all, as a ring does, but in
``2 (n / r - 1) + 2 (r - 1)`` steps instead of ``2 (n - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import (
    BuildContext,
    aligned_split_sizes,
    concat_each,
    run_all_reduce,
    split_on,
)
from allreduce.graph.algorithms.ring import all_gather, reduce_scatter
from allreduce.graph.wire import Packet
from allreduce.planning.algorithms.torus import torus_grid
from allreduce.planning.registry import get_algorithm


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """2-D torus all-reduce of 1-D ``values`` with ``ctx.shards`` rows (1: chosen)."""
    grid = torus_grid(len(values), ctx.shards)
    columns = len(grid[0])
    sizes = aligned_split_sizes(values[0].shape[0], columns, values[0].dtype.size)
    kept = [c for c, size in enumerate(sizes) if size]
    split = [split_on(v, d, [sizes[c] for c in kept]) for v, d in zip(values, devices)]
    order = list(range(columns))
    row_sums = []
    for row in grid:
        pieces = [dict(zip(kept, split[i])) for i in row]
        row_sums.append(reduce_scatter(pieces, [devices[i] for i in row], order, ctx))
    # Chunk c is owned by row position c - 1 in every row: all-reduce it down that column.
    column_ctx = ctx.for_algorithm(get_algorithm("xring"))
    owner = {c: (c + columns - 1) % columns for c in kept}
    for c in kept:
        column = [devices[row[owner[c]]] for row in grid]
        totals = run_all_reduce([sums[c] for sums in row_sums], column, column_ctx)
        for sums, total in zip(row_sums, totals):
            sums[c] = total
    held: list[list[Packet]] = [[] for _ in values]
    for row, sums in zip(grid, row_sums):
        gathered = all_gather(sums, [devices[i] for i in row], order, ctx)
        for position, i in enumerate(row):
            held[i] = [gathered[position][c] for c in kept]
    return concat_each(held, devices, ctx)
