"""Each algorithm's declared rounding path (``AlgorithmInfo.roundings``) against its graph.

The graph of an all-reduce with ``CastWire("bf16", everywhere=True)`` is walked from the
inputs to the outputs, counting on every path the casts to bfloat16 (a cast of a value
that is already a decoded bfloat16, moved or concatenated but not added to, is exact
and not counted) and the float32 additions (an ``AddN`` of k inputs rounds up to k - 1
times on one input's path). The longest path must be what the registry declares, so
that :func:`allreduce.error_bound` bounds what the builders really do.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

import allreduce
from allreduce.graph.compression import CastWire
from allreduce.planning.accuracy import rounding_path
from allreduce.planning.registry import CPU, GPU, Roundings, algorithm_names, get_algorithm
from tests.strategies import cpu

WIRE = CastWire("bf16", everywhere=True)
#: Ops that move or cut values without changing them: a decoded wire value stays one.
MOVES = {"Identity", "IdentityN", "ConcatV2", "SplitV", "Split", "Reshape", "EnsureShape"}


def longest_path(graph: tf.Graph, inputs: list[tf.Tensor], outputs: list[tf.Tensor]) -> Roundings:
    """The most wire casts and additions on any path from ``inputs`` to ``outputs``."""
    wire: dict[str, int] = {t.name: 0 for t in inputs}
    adds: dict[str, int] = dict(wire)
    exact: dict[str, bool] = {t.name: False for t in inputs}  # a decoded wire value
    for op in graph.get_operations():
        reached = [t for t in op.inputs if t.name in wire]
        if not reached:
            continue
        w, a = max(wire[t.name] for t in reached), max(adds[t.name] for t in reached)
        is_exact = op.type in MOVES and all(exact[t.name] for t in reached)
        if op.type == "Cast" and op.get_attr("DstT") == WIRE.dtype:
            w += 0 if exact[reached[0].name] else 1
        elif op.type == "Cast" and op.get_attr("SrcT") == WIRE.dtype:
            is_exact = True
        elif op.type == "AddV2":
            a += 1
        elif op.type == "AddN":
            a += len(op.inputs) - 1
        for t in op.outputs:
            wire[t.name], adds[t.name], exact[t.name] = w, a, is_exact
    return Roundings(max(wire[t.name] for t in outputs), max(adds[t.name] for t in outputs))


def traced_path(spec: str, devices: list[str], groups: list[list[int]] | None = None) -> Roundings:
    """The longest path of ``spec`` on ``devices``, from the graph it builds (not run)."""
    with tf.Graph().as_default() as graph:
        inputs = []
        for device in devices:
            with tf.device(device):
                inputs.append(tf.compat.v1.placeholder(tf.float32, [40]))
        outputs = allreduce.all_reduce(inputs, spec, worker_groups=groups, compression=WIRE)
    return longest_path(graph, inputs, outputs)


def _flat_cases() -> list[tuple[str, int, int]]:
    cases = []
    for name in algorithm_names():
        info = get_algorithm(name)
        if CPU not in info.device_types or not info.reduces or info.roundings(2, 1).wire == 0:
            continue
        for n in (2, 3, 5, 8):
            devices = [cpu(i) for i in range(n)]
            shards = [
                k for k in (1, 2, 4) if (k == 1 or info.takes_shards) and info.problem(devices, k) is None
            ]
            cases += [(name, n, k) for k in shards]
    return cases


@pytest.mark.parametrize(("alg", "n", "shards"), _flat_cases())
def test_a_flat_algorithm_rounds_as_it_declares(alg: str, n: int, shards: int) -> None:
    spec = alg if shards == 1 else f"{alg}#{shards}"
    assert traced_path(spec, [cpu(i) for i in range(n)]) == rounding_path(alg, n, shards)


def test_a_gpu_shuffle_rounds_as_it_declares() -> None:
    gpus = [f"/job:localhost/replica:0/task:0/device:{GPU}:{i}" for i in range(4)]
    assert traced_path("psgpu#2", gpus) == rounding_path("psgpu", 4, 2)


def test_a_kernel_that_sums_on_its_own_rounds_nothing_to_the_wire() -> None:
    path = traced_path("collective", [cpu(i) for i in range(4)])
    assert path.wire == 0 == rounding_path("collective", 4).wire


@pytest.mark.parametrize(
    ("alg", "groups"),
    [
        ("pscpu/xring", [[0, 1, 2], [3, 4, 5, 6]]),
        ("xring/xring", [[0, 1, 2, 3], [4, 5, 6, 7]]),
        ("simple/rechd", [[0], [1, 2], [3, 4, 5]]),
        ("rechd/pscpu", [[0, 1, 2, 3, 4]]),
        ("xring/simple", [[0, 1, 2]]),
        ("better/torus", [[0, 1], [2, 3], [4, 5], [6, 7]]),
    ],
)
def test_a_hierarchical_spec_rounds_as_its_levels_add_up(alg: str, groups: list[list[int]]) -> None:
    # Where the lower level is a whole all-reduce, its results are wire values already and
    # the upper level's first rounding of one is exact; the sum of the levels counts it
    # (a level may add before it first rounds, so it cannot be left out in general).
    n = sum(len(g) for g in groups)
    traced = traced_path(alg, [cpu(i) for i in range(n)], groups)
    declared = rounding_path(alg, n, 1, groups)
    assert declared.adds == traced.adds
    slack = 1 if get_algorithm(alg.split("/")[0]).reducer is None and len(groups) > 1 else 0
    assert declared.wire == traced.wire + slack
