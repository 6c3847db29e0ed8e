"""Recursive halving-doubling (``rechd``), for any device count: its declaration, plan,
rounding rule and cost formula (pure Python). Its builder:
``allreduce.graph.algorithms.halving_doubling``."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

from allreduce.planning.algorithms.base import BOTH, AlgorithmInfo
from allreduce.planning.cost import Job
from allreduce.planning.cost_steps import concat_each, shares_memory, split
from allreduce.planning.roundings import Roundings
from allreduce.planning.traffic import Schedule

__layer__ = "pure"

__all__ = [
    "RECHD",
    "HalvingDoublingPlan",
    "halving_doubling_cost",
    "halving_doubling_plan",
    "halving_doubling_roundings",
]


class HalvingDoublingPlan(NamedTuple):
    """Recursive halving-doubling over any number of devices.

    ``core`` devices (the largest power of two not above the count) run the
    algorithm; each extra device ``core + e`` first folds its input into device ``e``
    (``folds`` lists ``(extra, partner)``) and gets the result back at the end.
    ``distances`` are the halving rounds' partner distances (doubling runs them in
    reverse); ``intervals[r][i]`` is the ``[start, stop)`` element interval that core
    device ``i`` holds reduced after halving round ``r``.
    """

    core: int
    folds: list[tuple[int, int]]
    distances: list[int]
    intervals: list[list[tuple[int, int]]]


def halving_doubling_plan(num_devices: int, length: int) -> HalvingDoublingPlan:
    """Plans recursive halving-doubling of ``length`` elements over ``num_devices``.

    Raises:
        ValueError: ``num_devices`` below 1 or ``length`` negative.
    """
    if num_devices < 1:
        raise ValueError(f"num_devices must be at least 1, got {num_devices}")
    if length < 0:
        raise ValueError(f"length must be non-negative, got {length}")
    core = 1 << (num_devices.bit_length() - 1)
    folds = [(core + e, e) for e in range(num_devices - core)]
    distances = []
    d = core // 2
    while d >= 1:
        distances.append(d)
        d //= 2
    current = [(0, length)] * core
    intervals = []
    for d in distances:
        after = []
        for i in range(core):
            start, stop = current[i]
            middle = start + (stop - start + 1) // 2
            after.append((start, middle) if i & d == 0 else (middle, stop))
        intervals.append(after)
        current = after
    return HalvingDoublingPlan(core, folds, distances, intervals)


def halving_doubling_roundings(n: int, shards: int) -> Roundings:
    # A fold into the power-of-two core, one received half per halving round, the publish.
    del shards
    core = 1 << (n.bit_length() - 1)
    steps = (n > core) + core.bit_length() - 1
    return Roundings(wire=steps + 1, adds=steps)


def halving_doubling_cost(job: Job) -> Schedule:
    """``rechd``: a fold into the power-of-two core, halving rounds, doubling rounds (one
    concatenation where the core's devices share memory), and the results sent back."""
    devices, b = job.devices, job.itemsize
    plan = halving_doubling_plan(len(devices), job.length)
    s = Schedule()
    for extra, partner in plan.folds:
        r = s.at(0)
        r.hop(devices[extra], devices[partner], job.nbytes)
        r.add(devices[partner], 2, job.nbytes)
    held = [(0, job.length)] * plan.core
    for d, after in zip(plan.distances, plan.intervals):
        r = s.next()
        for i in range(plan.core):
            lower, upper = sorted((after[i], after[i ^ d]))
            split(r, devices[i], [lower[1] - lower[0], upper[1] - upper[0]], b)
            nbytes = (after[i][1] - after[i][0]) * b
            r.hop(devices[i ^ d], devices[i], nbytes)
            r.add(devices[i], 2, nbytes)
        held = after
    core = devices[: plan.core]
    if shares_memory(core):
        ordered = sorted(range(plan.core), key=lambda i: held[i])
        pieces = [(devices[i], (held[i][1] - held[i][0]) * b, ("half", s.uid, i)) for i in ordered]
        concat_each(s, [pieces] * plan.core, core)
    else:
        sizes = [(stop - start) * b for start, stop in held]
        values: list[Hashable] = [("half", s.uid, i) for i in range(plan.core)]
        for k, d in enumerate(reversed(plan.distances)):
            r = s.next()
            for i in range(plan.core):
                r.hop(devices[i ^ d], devices[i], sizes[i ^ d], values[i ^ d])
                r.copy(devices[i], sizes[i] + sizes[i ^ d])
            sizes = [sizes[i] + sizes[i ^ d] for i in range(plan.core)]
            values = [("double", s.uid, k, i) for i in range(plan.core)]
        s.results.update(zip(core, values))
    if plan.folds:
        r = s.next()
        for extra, partner in plan.folds:
            value = s.results[devices[partner]]
            r.hop(devices[partner], devices[extra], job.nbytes, value)
            s.results[devices[extra]] = ("copy", s.uid, devices[extra])
    return s


RECHD = AlgorithmInfo(
    "rechd",
    "recursive halving-doubling, for any device count",
    None,
    BOTH,
    roundings=halving_doubling_roundings,
    cost=halving_doubling_cost,
)
