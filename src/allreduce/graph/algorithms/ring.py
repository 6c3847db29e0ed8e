"""Ring all-reduce (``xring#k``): a reduce-scatter then an all-gather around a ring.

The vector is cut into ``k`` subchunks, each reduced by its own ring with a rotated
device order (:func:`allreduce.planning.algorithms.ring.ring_orders`); each subchunk is cut into one
near-equal chunk per device (whole multiples of 64 bytes where the length allows, so
that cutting copies nothing), so sizes need not divide. Empty chunks (a vector shorter
than the ring) emit nothing. CPUs of one worker share memory: after the all-gather they
hold the same chunks, and concatenate them once; there the all-gather's hops, which
would move no bytes, are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import (
    BuildContext,
    aligned_split_sizes,
    concat_each,
    forward,
    shares_memory,
    split_on,
)
from allreduce.graph.wire import Packet
from allreduce.planning.algorithms.ring import ring_orders


def reduce_scatter(
    pieces: Sequence[Mapping[int, tf.Tensor]], devices: Sequence[str], order: Sequence[int], ctx: BuildContext
) -> dict[int, tf.Tensor]:
    """Ring reduce-scatter: ``pieces[i][c]`` is chunk ``c`` on ``devices[i]``, for the
    chunks ``c`` (ring positions ``0..n-1``) that are present. Returns ``{c: sum}``,
    each sum on device ``order[c - 1]``.

    Chunk ``c`` starts at ring position ``c`` and each next position adds its piece, as
    :func:`allreduce.planning.algorithms.ring.ring_reduce_scatter_steps` schedules it.
    """
    n = len(order)
    sums = {}
    for c in pieces[0]:
        src = order[c]
        partial = pieces[src][c]
        for step in range(1, n):
            dst = order[(c + step) % n]
            with tf.device(devices[dst]):
                partial = tf.add(ctx.wire.receive(partial, devices[src], devices[dst]), pieces[dst][c])
            src = dst
        sums[c] = partial
    return sums


def all_gather(
    sums: Mapping[int, tf.Tensor], devices: Sequence[str], order: Sequence[int], ctx: BuildContext
) -> list[dict[int, Packet]]:
    """Ring all-gather after :func:`reduce_scatter`: ``result[i][c]`` is chunk ``c``'s
    packet on ``devices[i]``, forwarded hop by hop from its owner."""
    n = len(order)
    held: list[dict[int, Packet]] = [{} for _ in devices]
    for c, total in sums.items():
        position = (c + n - 1) % n
        packet = ctx.wire.publish(total, devices[order[position]], devices)
        held[order[position]][c] = packet
        for step in range(1, n):
            device = order[(position + step) % n]
            packet = forward(packet, devices[device])
            held[device][c] = packet
    return held


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Ring all-reduce of 1-D ``values`` over ``ctx.shards`` rings."""
    n = len(values)
    itemsize = values[0].dtype.size
    sub_sizes = aligned_split_sizes(values[0].shape[0], ctx.shards, itemsize)
    # (ring, position in the ring, size) of every non-empty chunk, in vector order.
    chunks = [
        (r, c, size)
        for r, sub in enumerate(sub_sizes)
        for c, size in enumerate(aligned_split_sizes(sub, n, itemsize))
        if size
    ]
    split = [split_on(v, d, [size for _, _, size in chunks]) for v, d in zip(values, devices)]
    held: dict[tuple[int, int], list[Packet]] = {}
    shared = shares_memory(devices)
    for r, order in enumerate(ring_orders(n, ctx.shards)):
        mine = [(k, c) for k, (ring, c, _) in enumerate(chunks) if ring == r]
        if not mine:
            continue
        pieces = [{c: split[d][k] for k, c in mine} for d in range(n)]
        sums = reduce_scatter(pieces, devices, order, ctx)
        if shared:
            # Forwarding a chunk between CPUs of one process moves no bytes: every device
            # takes each sum from its owner (and one CPU concatenates them for all).
            for c, total in sums.items():
                owner = devices[order[(c + n - 1) % n]]
                held[r, c] = [ctx.wire.publish(total, owner, devices)] * n
            continue
        gathered = all_gather(sums, devices, order, ctx)
        for _, c in mine:
            held[r, c] = [gathered[d][c] for d in range(n)]
    ordered = [held[r, c] for r, c, _ in chunks]
    return concat_each([[packets[d] for packets in ordered] for d in range(n)], devices, ctx)
