"""Hierarchical ``A/B`` (``nccl/xring``, ``pscpu/pscpu``...): the entry a pair of two
composable algorithms makes, and its cost formula (pure Python). Its builder:
``allreduce.graph.algorithms.hierarchical``."""

from __future__ import annotations

from allreduce.planning.algorithms.base import AlgorithmInfo
from allreduce.planning.cost import Job, schedule_of
from allreduce.planning.cost_steps import broadcast
from allreduce.planning.devices import group_by_worker
from allreduce.planning.traffic import Schedule

__layer__ = "pure"

__all__ = ["hierarchical", "hierarchical_cost"]


def hierarchical_cost(job: Job) -> Schedule:
    """``A/B``: ``A`` leaves each worker's sum on one device (its reducer, or its
    all-reduce's first result), ``B`` all-reduces those sums, each worker copies its
    result to its devices: the sum of the three parts."""
    lower, upper = job.info.level_infos
    devices = job.devices
    groups = job.worker_groups or tuple(tuple(g) for g in group_by_worker(devices))
    reduces = lower.reducer is not None
    parts, roots = [], []
    for group in groups:
        members = [devices[i] for i in group]
        # Both levels have formulas: :func:`hierarchical` gives A/B one only then.
        part = schedule_of(job.level(lower, members, reduce_only=reduces)) or Schedule()
        parts.append(part)
        roots.append(part.root if reduces and part.root is not None else members[0])
    s = Schedule().alongside(parts)
    if len(groups) > 1:
        s.then(schedule_of(job.level(upper, roots, job.shards, reduce_only=False)) or Schedule())
    r = s.next()
    for group, root, part in zip(groups, roots, parts):
        value = part.results.get(root) if len(groups) == 1 else None
        broadcast(r, root, [devices[i] for i in group], job.nbytes, value)
    return s


def hierarchical(lower: AlgorithmInfo, upper: AlgorithmInfo) -> AlgorithmInfo:
    """The entry of ``lower/upper``: ``lower`` within each worker, ``upper`` across them."""
    return AlgorithmInfo(
        name=f"{lower.name}/{upper.name}",
        summary=f"{lower.name} within each worker, {upper.name} across workers, then broadcast",
        builder=None,
        device_types=lower.device_types,
        shards=f"{upper.shards} of the across-worker level" if upper.shards else None,
        composable=False,
        distinct_devices=lower.distinct_devices,
        levels=(lower.name, upper.name),
        shard_rule=upper.shard_rule,
        gather_type=upper.gather_type,
        physical_devices=lower.physical_devices or upper.physical_devices,
        emulable=lower.emulable and upper.emulable,
        failure_note=lower.failure_note or upper.failure_note,
        cost=hierarchical_cost if lower.cost and upper.cost else None,
        level_infos=(lower, upper),
    )
