"""Shuffle (``pscpu#k``, ``psgpu#k``): each shard summed on a gather device and copied
back. Their declarations and cost formula (pure Python). Their builders:
``allreduce.graph.algorithms.shuffle``."""

from __future__ import annotations

from allreduce.planning.algorithms.base import BOTH, CPU, GPU, GPU_ONLY, SHARDS_GATHER, AlgorithmInfo
from allreduce.planning.cost import Job
from allreduce.planning.cost_steps import concat_each, split, sum_on
from allreduce.planning.devices import gather_candidates, group_device_names
from allreduce.planning.roundings import gather_roundings, sum_reducer_roundings
from allreduce.planning.schedules import aligned_split_sizes
from allreduce.planning.traffic import Schedule

__layer__ = "pure"

__all__ = ["PSCPU", "PSGPU", "shuffle_cost"]


def shuffle_cost(job: Job) -> Schedule:
    """``pscpu#k`` / ``psgpu#k``: shard ``i`` of every input summed on gather device
    ``i`` of this tensor's group, then joined on every device (or, as a reducer, on the
    group's first gather device, unsharded: a first level takes no shard count)."""
    devices, b = job.devices, job.itemsize
    shards = 1 if job.reduce_only else job.shards
    groups = group_device_names(gather_candidates(devices, job.info.gather_type or CPU), shards)
    group = groups[job.tensor_index % len(groups)]
    sizes = aligned_split_sizes(job.length, shards, b)
    kept = [i for i, size in enumerate(sizes) if size]
    s = Schedule()
    for d in devices:
        split(s.at(0), d, [sizes[i] for i in kept], b)
    for i in kept:
        sum_on(s.at(0), s.at(1), devices, group[i], sizes[i] * b)
    where = [(group[i], sizes[i] * b, ("sum", s.uid, i)) for i in kept]
    if not job.reduce_only:
        concat_each(s, [where] * len(devices), devices)
        return s
    s.root = where[0][0]
    return s


PSCPU = AlgorithmInfo(
    "pscpu",
    "shuffle: each shard summed on a CPU of the workers and copied back",
    None,
    BOTH,
    shards="gather devices per tensor",
    reducer=True,
    shard_rule=SHARDS_GATHER,
    gather_type=CPU,
    roundings=gather_roundings,
    reducer_roundings=sum_reducer_roundings,
    cost=shuffle_cost,
)
PSGPU = AlgorithmInfo(
    "psgpu",
    "shuffle: each shard summed on one of the GPUs and copied back",
    None,
    GPU_ONLY,
    shards="gather GPUs per tensor",
    reducer=True,
    shard_rule=SHARDS_GATHER,
    gather_type=GPU,
    roundings=gather_roundings,
    reducer_roundings=sum_reducer_roundings,
    cost=shuffle_cost,
)
