"""Ring all-reduce (``xring#k``): a reduce-scatter then an all-gather around a ring.

The vector is cut into ``k`` subchunks, each reduced by its own ring with a rotated
device order (:func:`allreduce.schedules.ring_orders`); each subchunk is cut into one
near-equal chunk per device (whole multiples of 64 bytes where the length allows, so
that cutting copies nothing), so sizes need not divide. CPUs of one worker share
memory: after the all-gather they hold the same chunks, and concatenate them once.
"""

from __future__ import annotations

from collections.abc import Sequence

from allreduce._tf import tf
from allreduce.algorithms.base import BuildContext, aligned_split_sizes, concat_each, split_on
from allreduce.schedules import ring_all_gather_steps, ring_orders, ring_reduce_scatter_steps


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Ring all-reduce of 1-D ``values`` over ``ctx.shards`` rings."""
    n = len(values)
    length = values[0].shape[0]
    rings = ctx.shards
    itemsize = values[0].dtype.size
    sizes = [
        size
        for sub in aligned_split_sizes(length, rings, itemsize)
        for size in aligned_split_sizes(sub, n, itemsize)
    ]
    pieces = [split_on(v, d, sizes) for v, d in zip(values, devices)]
    gathered: list[list[tf.Tensor | None]] = [[None] * len(sizes) for _ in range(n)]
    for r, order in enumerate(ring_orders(n, rings)):
        base = r * n
        partial = {(p, c): pieces[order[p]][base + c] for p in range(n) for c in range(n)}
        for step in ring_reduce_scatter_steps(n):
            for src, dst, chunk in step:
                device = order[dst]
                with tf.device(devices[device]):
                    partial[dst, chunk] = tf.add(partial[src, chunk], pieces[device][base + chunk])
        full = {(p, (p + 1) % n): partial[p, (p + 1) % n] for p in range(n)}
        for step in ring_all_gather_steps(n):
            for src, dst, chunk in step:
                with tf.device(devices[order[dst]]):
                    full[dst, chunk] = tf.identity(full[src, chunk])
        for p in range(n):
            for c in range(n):
                gathered[order[p]][base + c] = full[p, c]
    return concat_each(gathered, devices)
