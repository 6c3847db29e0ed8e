"""The plain aggregations: ``simple``, ``better`` and the ``trivial`` baseline."""

from __future__ import annotations

from collections.abc import Sequence

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import BuildContext, broadcast, sum_on


def simple_reduce(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext
) -> tuple[tf.Tensor, str]:
    """One ``add_n`` on the first device."""
    return sum_on(values, devices, devices[0], ctx), devices[0]


def simple(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """One ``add_n`` on the first device, copied to every device."""
    total, where = simple_reduce(values, devices, ctx)
    return broadcast(total, where, devices, ctx)


def better_reduce(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext
) -> tuple[tf.Tensor, str]:
    """One ``add_n`` on device ``tensor_index % n``, so a batch spreads over the devices."""
    device = devices[ctx.tensor_index % len(devices)]
    return sum_on(values, devices, device, ctx), device


def better(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Copy-based aggregation on a round-robin device, copied to every device."""
    total, where = better_reduce(values, devices, ctx)
    return broadcast(total, where, devices, ctx)


def trivial(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """No reduction: each input, copied on its own device (a baseline for benchmarks)."""
    out = []
    for value, device in zip(values, devices):
        with tf.device(device):
            out.append(tf.identity(value))
    return out
