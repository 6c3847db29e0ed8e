"""Recursive halving-doubling (``rechd``) for any device count and any length.

The largest power-of-two subset of the devices runs the algorithm; each other device
first folds its input into a partner and gets the result back at the end. Halves are
near-equal, so the length need not divide. See
:func:`allreduce.planning.algorithms.halving_doubling.halving_doubling_plan`.
"""

from __future__ import annotations

from collections.abc import Sequence

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import BuildContext, concat_each, forward, shares_memory, split_on
from allreduce.graph.wire import Packet
from allreduce.planning.algorithms.halving_doubling import HalvingDoublingPlan, halving_doubling_plan


def _halve(
    core: list[tf.Tensor], devices: Sequence[str], plan: HalvingDoublingPlan, ctx: BuildContext
) -> list[tf.Tensor]:
    """The halving rounds: core device ``i`` ends with the sum of its final interval."""
    for d, after in zip(plan.distances, plan.intervals):
        halves = []
        for i in range(plan.core):
            # After the round, the partner without bit d holds the lower half.
            lower, upper = sorted((after[i], after[i ^ d]))
            halves.append(split_on(core[i], devices[i], [lower[1] - lower[0], upper[1] - upper[0]]))
        reduced = []
        for i in range(plan.core):
            keep = 0 if i & d == 0 else 1
            theirs = ctx.wire.receive(halves[i ^ d][keep], devices[i ^ d], devices[i])
            with tf.device(devices[i]):
                reduced.append(tf.add(halves[i][keep], theirs))
        core = reduced
    return core


def _double(packets: list[Packet], devices: Sequence[str], plan: HalvingDoublingPlan) -> list[Packet]:
    """The doubling rounds: partners exchange what they hold, in reverse order."""
    for d in reversed(plan.distances):
        grown = []
        for i in range(plan.core):
            mine, theirs = packets[i], forward(packets[i ^ d], devices[i])
            with tf.device(devices[i]):
                pair = [mine.tensor, theirs.tensor] if i & d == 0 else [theirs.tensor, mine.tensor]
                grown.append(mine._replace(tensor=tf.concat(pair, axis=0)))
        packets = grown
    return packets


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Recursive halving-doubling all-reduce of 1-D ``values``."""
    n = len(values)
    plan = halving_doubling_plan(n, values[0].shape[0])
    held = list(values)
    for extra, partner in plan.folds:
        theirs = ctx.wire.receive(held[extra], devices[extra], devices[partner])
        with tf.device(devices[partner]):
            held[partner] = tf.add(held[partner], theirs)
    core_devices = devices[: plan.core]
    core = _halve(held[: plan.core], devices, plan, ctx)
    packets = [ctx.wire.publish(v, d, devices) for v, d in zip(core, core_devices)]
    if shares_memory(core_devices):
        # Doubling only moves the reduced pieces; where the devices share memory that
        # is free, and one concatenation of all the pieces replaces log2(n) rounds. Core
        # device i holds the i-th piece (halving_doubling_plan's intervals are in order).
        results = concat_each([packets] * plan.core, core_devices, ctx)
    else:
        results = [ctx.wire.open(p, d) for p, d in zip(_double(packets, devices, plan), core_devices)]
    results += [None] * (n - plan.core)
    for extra, partner in plan.folds:
        with tf.device(devices[extra]):
            results[extra] = tf.identity(results[partner])
    return results
