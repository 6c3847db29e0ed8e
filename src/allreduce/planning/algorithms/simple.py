"""The plain aggregations (``simple``, ``better``) and the ``trivial`` baseline: their
declarations and cost formulas (pure Python). Their builders:
``allreduce.graph.algorithms.simple``."""

from __future__ import annotations

from allreduce.planning.algorithms.base import BOTH, AlgorithmInfo
from allreduce.planning.cost import Job
from allreduce.planning.cost_steps import broadcast, sum_on
from allreduce.planning.roundings import gather_roundings, sum_reducer_roundings
from allreduce.planning.traffic import Schedule

__layer__ = "pure"

__all__ = ["BETTER", "SIMPLE", "TRIVIAL", "better_cost", "simple_cost", "trivial_cost"]


def _one_sum(job: Job, target: str) -> Schedule:
    s = Schedule(root=target)
    sum_on(s.at(0), s.at(1), job.devices, target, job.nbytes)
    if not job.reduce_only:
        broadcast(s.next(), target, job.devices, job.nbytes, ("sum", s.uid))
    return s


def simple_cost(job: Job) -> Schedule:
    """``simple``: one ``add_n`` on the first device, copied to every device."""
    return _one_sum(job, job.devices[0])


def better_cost(job: Job) -> Schedule:
    """``better``: as :func:`simple_cost`, on device ``tensor_index % p``."""
    return _one_sum(job, job.devices[job.tensor_index % len(job.devices)])


def trivial_cost(job: Job) -> Schedule:
    """``trivial``: nothing crosses devices."""
    del job
    return Schedule()


SIMPLE = AlgorithmInfo(
    "simple",
    "one add_n on the first device, copied to every device",
    None,
    BOTH,
    reducer=True,
    roundings=gather_roundings,
    reducer_roundings=sum_reducer_roundings,
    cost=simple_cost,
)
BETTER = AlgorithmInfo(
    "better",
    "copy-based aggregation, the summing device chosen round-robin per tensor",
    None,
    BOTH,
    reducer=True,
    roundings=gather_roundings,
    reducer_roundings=sum_reducer_roundings,
    cost=better_cost,
)
TRIVIAL = AlgorithmInfo(
    "trivial",
    "no reduction: returns each input unchanged (a baseline, not an all-reduce)",
    None,
    BOTH,
    composable=False,
    reduces=False,
    cost=trivial_cost,
)
