"""Shuffle all-reduce (``pscpu#k``, ``psgpu#k``): a parameter-server style reduction.

Each input is cut into ``k`` near-equal shards; shard ``s`` of every input is summed
on gather device ``s`` of a group of ``k`` gather devices and copied back. Groups are
taken round-robin per tensor of a batch, as :func:`allreduce.devices.group_device_names`
forms them. ``pscpu`` gathers on the workers' CPUs (the CPU inputs themselves when the
inputs are CPUs, else each worker's ``CPU:0``); ``psgpu`` on the input GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence

from allreduce._tf import tf
from allreduce.algorithms.base import (
    BuildContext,
    aligned_split_sizes,
    concat_each,
    concat_on,
    split_on,
    sum_on,
)
from allreduce.devices import group_device_names, parse_device_name
from allreduce.registry import CPU, GPU


def gather_candidates(devices: Sequence[str], device_type: str) -> list[str]:
    """The devices a shuffle of ``device_type`` may gather on, in order, without repeats."""
    found: dict[str, None] = {}
    for name in devices:
        if parse_device_name(name).device_type == device_type:
            found.setdefault(name, None)
    if device_type == CPU:
        covered = {parse_device_name(name).worker for name in found}
        for name in devices:
            parsed = parse_device_name(name)
            if parsed.worker not in covered:
                found.setdefault(parsed.with_device(CPU, 0), None)
                covered.add(parsed.worker)
    return list(found)


def gather_group(devices: Sequence[str], ctx: BuildContext, device_type: str) -> list[str]:
    """The ``ctx.shards`` gather devices for this tensor, chosen round-robin.

    Raises:
        ValueError: fewer candidate gather devices than shards.
    """
    candidates = gather_candidates(devices, device_type)
    if ctx.shards > len(candidates):
        raise ValueError(
            f"{ctx.info.name}#{ctx.shards} needs {ctx.shards} distinct {device_type} gather "
            f"devices but the inputs offer {len(candidates)}: {candidates}"
        )
    groups = group_device_names(candidates, ctx.shards)
    return groups[ctx.tensor_index % len(groups)]


def _shard_sums(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext, device_type: str
) -> tuple[list[tf.Tensor], list[str]]:
    group = gather_group(devices, ctx, device_type)
    sizes = aligned_split_sizes(values[0].shape[0], ctx.shards, values[0].dtype.size)
    shards = [split_on(v, d, sizes) for v, d in zip(values, devices)]
    sums = []
    for s, gather in enumerate(group):
        sums.append(sum_on([pieces[s] for pieces in shards], devices, gather))
    return sums, group


def _all_reduce(values, devices, ctx, device_type):
    sums, _ = _shard_sums(values, devices, ctx, device_type)
    return concat_each([sums] * len(devices), devices)


def _reduce(values, devices, ctx, device_type):
    sums, group = _shard_sums(values, devices, ctx, device_type)
    return concat_on(sums, group[0]), group[0]


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
