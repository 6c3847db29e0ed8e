"""Shuffle all-reduce (``pscpu#k``, ``psgpu#k``): a parameter-server style reduction.

Each input is cut into ``k`` near-equal shards; shard ``s`` of every input is summed
on gather device ``s`` of a group of ``k`` gather devices and copied back. Groups are
taken round-robin per tensor of a batch, as :func:`allreduce.planning.devices.group_device_names`
forms them. ``pscpu`` gathers on the workers' CPUs (the CPU inputs themselves when the
inputs are CPUs, else each worker's ``CPU:0``); ``psgpu`` on the input GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import (
    BuildContext,
    aligned_split_sizes,
    concat_each,
    split_on,
    sum_on,
)
from allreduce.planning.devices import gather_candidates, group_device_names
from allreduce.planning.registry import CPU, GPU


def gather_group(devices: Sequence[str], ctx: BuildContext, device_type: str) -> list[str]:
    """The ``ctx.shards`` gather devices for this tensor, chosen round-robin from
    :func:`allreduce.planning.devices.gather_candidates` (the registry has checked there are enough)."""
    groups = group_device_names(gather_candidates(devices, device_type), ctx.shards)
    return groups[ctx.tensor_index % len(groups)]


def _shard_sums(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext, device_type: str
) -> tuple[list[tf.Tensor], list[str]]:
    group = gather_group(devices, ctx, device_type)
    sizes = aligned_split_sizes(values[0].shape[0], ctx.shards, values[0].dtype.size)
    kept = [i for i, size in enumerate(sizes) if size]
    shards = [split_on(v, d, [sizes[i] for i in kept]) for v, d in zip(values, devices)]
    sums = [sum_on([pieces[k] for pieces in shards], devices, group[i], ctx) for k, i in enumerate(kept)]
    return sums, [group[i] for i in kept]


def _all_reduce(values, devices, ctx, device_type):
    sums, where = _shard_sums(values, devices, ctx, device_type)
    packets = [ctx.wire.publish(s, w, devices) for s, w in zip(sums, where)]
    return concat_each([packets] * len(devices), devices, ctx)


def _reduce(values, devices, ctx, device_type):
    # A reducer is a hierarchical first level, which the spec gives no shard count
    # (``A/B#k`` shards the level across workers): one sum on one gather device.
    sums, where = _shard_sums(values, devices, replace(ctx, shards=1), device_type)
    return sums[0], where[0]


def all_reduce_on_cpus(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext
) -> list[tf.Tensor]:
    """Shuffle all-reduce gathering on the workers' CPUs."""
    return _all_reduce(values, devices, ctx, CPU)


def all_reduce_on_gpus(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext
) -> list[tf.Tensor]:
    """Shuffle all-reduce gathering on the input GPUs."""
    return _all_reduce(values, devices, ctx, GPU)


def reduce_on_cpus(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext
) -> tuple[tf.Tensor, str]:
    """The sum on the first gather CPU (a hierarchical first level)."""
    return _reduce(values, devices, ctx, CPU)


def reduce_on_gpus(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext
) -> tuple[tf.Tensor, str]:
    """The sum on the first gather GPU (a hierarchical first level)."""
    return _reduce(values, devices, ctx, GPU)
