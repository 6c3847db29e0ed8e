"""Stress run: several threads all-reduce at once through every public entry point.

Run by ``test_concurrency.py`` in a child process (a hang then fails the test instead of
the suite): ``python _stress.py SCENARIO OUT.json``. Every result is checked against the
float64 oracle on every device; the failures are written to ``OUT.json`` as a list.
Inputs are made before the threads start: TensorFlow 2.21's eager ops with shape
arguments (``tf.fill``, ``tf.reshape``) are not safe to run from several threads.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

import allreduce

DEVICES = allreduce.logical_devices(8)[:4]
THREADS = 4
ITERATIONS = 5
#: Threads 0 and 2 share one shape, 1 and 3 another: equal and differing shapes at once.
SHAPES = [(37,), (5, 9)]


def _tf():
    import tensorflow as tf

    return tf


def make_inputs(thread: int, count: int) -> list[list[object]]:
    """``towers[d][t]``: tensor ``t`` on device ``d``, of this thread's shape."""
    tf = _tf()
    rng = np.random.default_rng(thread)
    towers = []
    for device in DEVICES:
        with tf.device(device):
            towers.append(
                [
                    tf.constant(rng.standard_normal(SHAPES[thread % 2]).astype(np.float32))
                    for _ in range(count)
                ]
            )
    return towers


def check(towers: list[list[object]], results: list[list[object]]) -> str | None:
    """Why ``results`` are not the all-reduce of ``towers``, or ``None``."""
    for t in range(len(towers[0])):
        values = np.stack([np.asarray(tower[t], np.float64) for tower in towers])
        expected = np.sum(values, axis=0)
        bound = (
            (len(values) - 1) * 2.0**-24 / (1 - (len(values) - 1) * 2.0**-24) * np.sum(np.abs(values), axis=0)
        )
        first = np.asarray(results[0][t])
        for d, tower in enumerate(results):
            got = np.asarray(tower[t])
            if got.shape != values.shape[1:] or not np.all(np.abs(got - expected) <= bound):
                return (
                    f"tensor {t} on device {d}: shape {got.shape}, max error {np.max(np.abs(got - expected))}"
                )
            if got.tobytes() != first.tobytes():
                return f"tensor {t}: device {d} differs from device 0"
    return None


def entry_points(spec: str, graph: bool) -> list[Callable[[list[list[object]]], list[list[object]]]]:
    """Callables ``towers -> results`` through each public entry point."""
    tf = _tf()
    from tensorflow.python.distribute import values as distribute_values

    def one(towers):
        return [[out] for out in allreduce.all_reduce([tower[0] for tower in towers], spec, devices=DEVICES)]

    one.single = True

    def batch(towers):
        return allreduce.batch_all_reduce(
            towers, spec, pack_max_bytes=4096, pack_max_group=3, devices=DEVICES
        )

    def compat(towers):
        pairs = [[(t, f"v{i}") for i, t in enumerate(tower)] for tower in towers]
        reduced, packing = allreduce.sum_gradients_all_reduce(
            [], pairs, 1, spec, 1, list(range(len(towers))), 1024
        )
        return [[g for g, _ in tower] for tower in allreduce.unpack_small_tensors(reduced, packing)]

    ops = allreduce.SpecCrossDeviceOps(spec, pack_max_bytes=4096)

    def cross_device(towers):
        values = [
            distribute_values.PerReplica(tuple(tower[t] for tower in towers)) for t in range(len(towers[0]))
        ]
        reduced = ops.batch_reduce(tf.distribute.ReduceOp.SUM, [(v, v) for v in values])
        return [[r.values[d] for r in reduced] for d in range(len(towers))]

    calls = [one, batch, compat, cross_device]
    if not graph:
        return calls
    traced = []
    for call in calls[:2]:
        traced.append(_traced(call))
    return traced


def _traced(call):
    """``call`` inside a ``tf.function`` (one tensor per tower: arguments carry no device)."""
    tf = _tf()

    def body(*flat):
        return call([[t] for t in flat])

    function = tf.function(body, autograph=False)

    def run_traced(towers):
        return function(*[tower[0] for tower in towers])

    run_traced.single = True
    return run_traced


def run(spec: str, graph: bool) -> list[str]:
    calls = entry_points(spec, graph)
    inputs = [make_inputs(k, 3) for k in range(THREADS)]
    failures: list[str] = []

    def work(k: int) -> None:
        for i in range(ITERATIONS):
            call = calls[(i + k) % len(calls)]
            towers = [tower[:1] for tower in inputs[k]] if getattr(call, "single", False) else inputs[k]
            try:
                found = check(towers, call(towers))
            except Exception as err:
                found = f"{type(err).__name__}: {str(err)[:300]}"
            if found:
                failures.append(f"{spec} graph={graph} thread {k} {call.__name__}: {found}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def main(scenario: str, out: Path) -> None:
    from allreduce.planning.registry import algorithm_names, get_algorithm

    specs = [
        n for n in algorithm_names() if "CPU" in get_algorithm(n).device_types and get_algorithm(n).reduces
    ]
    specs += ["pscpu/xring", "pscpu:20:xring#2"]
    failures = []
    for spec in specs:
        failures += run(spec, graph=scenario == "function")
    out.write_text(json.dumps(failures))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
