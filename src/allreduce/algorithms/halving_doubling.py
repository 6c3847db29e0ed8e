"""Recursive halving-doubling (``rechd``) for any device count and any length.

The largest power-of-two subset of the devices runs the algorithm; each other device
first folds its input into a partner and gets the result back at the end. Halves are
near-equal, so the length need not divide. See
:func:`allreduce.schedules.halving_doubling_plan`.
"""

from __future__ import annotations

from collections.abc import Sequence

from allreduce._tf import tf
from allreduce.algorithms.base import BuildContext, concat_each, shares_memory, split_on
from allreduce.schedules import halving_doubling_plan


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Recursive halving-doubling all-reduce of 1-D ``values``."""
    n = len(values)
    plan = halving_doubling_plan(n, values[0].shape[0])
    held = list(values)
    for extra, partner in plan.folds:
        with tf.device(devices[partner]):
            held[partner] = tf.add(held[partner], held[extra])
    core = held[: plan.core]
    for d, after in zip(plan.distances, plan.intervals):
        halves = []
        for i in range(plan.core):
            # After the round, the partner without bit d holds the lower half.
            lower, upper = sorted((after[i], after[i ^ d]))
            halves.append(split_on(core[i], devices[i], [lower[1] - lower[0], upper[1] - upper[0]]))
        reduced = []
        for i in range(plan.core):
            keep = 0 if i & d == 0 else 1
            with tf.device(devices[i]):
                reduced.append(tf.add(halves[i][keep], halves[i ^ d][keep]))
        core = reduced
    if shares_memory(devices[: plan.core]) and plan.distances:
        # Doubling only moves the reduced pieces; where the devices share memory that
        # is free, and one concatenation of all the pieces replaces log2(n) rounds.
        final = plan.intervals[-1]
        ordered = [core[i] for i in sorted(range(plan.core), key=lambda i: final[i])]
        core = concat_each([ordered] * plan.core, devices[: plan.core])
    else:
        for d in reversed(plan.distances):
            grown = []
            for i in range(plan.core):
                mine, theirs = core[i], core[i ^ d]
                with tf.device(devices[i]):
                    grown.append(tf.concat([mine, theirs] if i & d == 0 else [theirs, mine], axis=0))
            core = grown
    results = list(core) + [None] * (n - plan.core)
    for extra, partner in plan.folds:
        with tf.device(devices[extra]):
            results[extra] = tf.identity(core[partner])
    return results
