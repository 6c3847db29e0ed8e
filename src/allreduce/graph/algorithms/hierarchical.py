"""Hierarchical ``A/B``: ``A`` within each worker, ``B`` across workers, broadcast back.

Workers are the ``/job/replica/task`` of the device names unless the caller passes an
explicit grouping (which lets one machine stand in for several). ``A`` leaves each
worker's sum on one device (its reducer, e.g. a worker CPU for ``pscpu``); ``B``
all-reduces those sums, with the spec's shard count; each worker then copies its
result to its devices.
"""

from __future__ import annotations

from collections.abc import Sequence

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import BuildContext, reduce_to_one, run_all_reduce
from allreduce.graph.wire import Packet
from allreduce.planning.devices import group_by_worker
from allreduce.planning.registry import get_algorithm


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Two-level all-reduce of 1-D ``values``."""
    lower, upper = (get_algorithm(name) for name in ctx.info.levels)
    groups = ctx.worker_groups or tuple(tuple(g) for g in group_by_worker(devices))
    sums, sum_devices = [], []
    for group in groups:
        total, device = reduce_to_one(
            [values[i] for i in group], [devices[i] for i in group], ctx.for_algorithm(lower)
        )
        sums.append(total)
        sum_devices.append(device)
    if len(groups) > 1:
        sums = run_all_reduce(sums, sum_devices, ctx.for_algorithm(upper, ctx.shards))
    # Every worker encodes its broadcast or none does: a worker whose copies cost nothing
    # (one device, or CPUs of one process) would otherwise keep a value others get rounded.
    encode = any(
        ctx.wire.crosses(where, devices[i]) for group, where in zip(groups, sum_devices) for i in group
    )
    results: list[tf.Tensor | None] = [None] * len(values)
    for group, total, where in zip(groups, sums, sum_devices):
        packet = Packet(total, total.dtype, False, where)
        if encode:
            with tf.device(where):
                packet = Packet(ctx.wire.encode(total), total.dtype, True, where)
        for i in group:
            results[i] = ctx.wire.open(packet, devices[i])
    return results
