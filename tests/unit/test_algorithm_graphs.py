"""What the algorithms' graphs are made of, where their sums alone cannot tell.

A shard count or a round-robin choice never changes a sum, so the oracle tests cannot
see whether ``#k`` reached the level it names or a tensor went to the device its turn
gives it. These tests build graphs (TensorFlow 1 graphs of placeholders; nothing runs)
and check the ops: how many sums, on which devices, between which neighbours.
"""

from __future__ import annotations

from collections import Counter

import pytest
import tensorflow as tf

import allreduce
from allreduce.planning.algorithms.torus import torus_grid
from allreduce.planning.devices import group_device_names
from allreduce.planning.registry import algorithm_names, get_algorithm
from tests.strategies import cpu

SUMS = ("AddN", "AddV2")


def build(spec: str, n: int, length: int, count: int = 1, **kwargs) -> list[tf.Operation]:
    """The ops ``batch_all_reduce`` emits for ``count`` tensors of ``length`` floats on
    ``n`` logical CPUs (tensor ``t`` on device ``d`` is a placeholder)."""
    devices = [cpu(i) for i in range(n)]
    with tf.Graph().as_default() as graph:
        towers = []
        for d in devices:
            with tf.device(d):
                towers.append([tf.compat.v1.placeholder(tf.float32, [length]) for _ in range(count)])
        before = set(graph.get_operations())
        allreduce.batch_all_reduce(towers, spec, **kwargs)
        return [op for op in graph.get_operations() if op not in before]


def sums(ops: list[tf.Operation]) -> list[tf.Operation]:
    return [op for op in ops if op.type in SUMS]


def index(device: str) -> int:
    return tf.DeviceSpec.from_string(device).device_index


@pytest.mark.parametrize("rings", [1, 2, 3])
def test_a_ring_count_cuts_every_input_into_rings_times_devices_chunks(rings: int) -> None:
    ops = build(f"xring#{rings}", 4, 4 * rings * 16)
    splits = Counter(index(op.device) for op in ops if op.type == "SplitV")
    assert splits == {d: 1 for d in range(4)}
    assert {op.get_attr("num_split") for op in ops if op.type == "SplitV"} == {4 * rings}
    assert len(sums(ops)) == rings * 4 * 3  # each chunk added at n - 1 steps


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_a_shuffle_sums_each_shard_on_the_gather_cpu_of_its_group(shards: int) -> None:
    # The first tensor's group, as the seed groups devices (round-robin, wrapping).
    group = group_device_names([cpu(i) for i in range(4)], shards)[0]
    ops = sums(build(f"pscpu#{shards}", 4, 64))
    assert [index(op.device) for op in ops] == [index(d) for d in group]


def test_round_robin_algorithms_give_each_tensor_of_a_batch_the_next_device() -> None:
    better = sums(build("better", 3, 8, count=4))
    assert [index(op.device) for op in better] == [0, 1, 2, 0]
    shuffle = sums(build("pscpu#2", 4, 8, count=2))
    assert sorted(index(op.device) for op in shuffle) == [0, 1, 2, 3]


@pytest.mark.parametrize(("spec", "expected"), [("pscpu/pscpu", 3), ("pscpu/pscpu#2", 4)])
def test_a_hierarchical_shard_count_shards_the_level_across_workers(spec: str, expected: int) -> None:
    # Two workers of two CPUs: one sum per worker, then one per shard across them.
    ops = sums(build(spec, 4, 64, worker_groups=[[0, 1], [2, 3]]))
    assert len(ops) == expected


@pytest.mark.parametrize(("n", "rows"), [(8, 2), (8, 4), (6, 3), (4, 1)])
def test_a_torus_adds_only_between_row_and_column_neighbours(n: int, rows: int) -> None:
    grid = torus_grid(n, rows)
    neighbours = set()
    for line in [*grid, *map(list, zip(*grid))]:
        if len(line) > 1:
            neighbours |= {(line[i], line[(i + 1) % len(line)]) for i in range(len(line))}
    edges = set()
    for op in sums(build(f"torus#{rows}" if rows > 1 else "torus", n, n * 16)):
        for value in op.inputs:
            if value.op.device and value.op.device != op.device and value.op.type != "Placeholder":
                edges.add((index(value.op.device), index(op.device)))
    assert edges and edges <= neighbours
    assert {(a, b) for a, b in neighbours if any(a in row and b in row for row in grid)} <= edges


def build_named(spec: str, devices: list[str], length: int, **kwargs) -> list[tf.Operation]:
    """The ops ``all_reduce`` emits over placeholders on ``devices`` (any names)."""
    with tf.Graph().as_default() as graph:
        values = []
        for d in devices:
            with tf.device(d):
                values.append(tf.compat.v1.placeholder(tf.float32, [length]))
        before = set(graph.get_operations())
        allreduce.all_reduce(values, spec, **kwargs)
        return [op for op in graph.get_operations() if op not in before]


GPUS = [f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(4)]


def _specs(kind: str, **wanted: bool) -> list[str]:
    found = []
    for name in algorithm_names():
        info = get_algorithm(name)
        if (
            kind in info.device_types
            and info.reduces
            and all(getattr(info, k) == v for k, v in wanted.items())
        ):
            found.append(name)
    return found


CPU_SPECS = _specs("CPU")
GPU_SPECS = _specs("GPU", emulable=True)


@pytest.mark.parametrize(
    ("spec", "devices", "kwargs"),
    [(s, "cpu", {}) for s in [*CPU_SPECS, "pscpu/xring", "rechd/xring#2"]]
    + [(s, "gpu", {}) for s in [*GPU_SPECS, "psgpu/xring", "rechd/pscpu"]]
    + [(s, "gpu", {"compression": "bf16"}) for s in [*GPU_SPECS, "psgpu/xring", "rechd/pscpu"]],
)
def test_no_op_copies_a_value_onto_the_device_it_is_on(spec: str, devices: str, kwargs: dict) -> None:
    names = [cpu(i) for i in range(4)] if devices == "cpu" else GPUS
    for n, length in ((3, 5), (4, 64)):
        extra = {"worker_groups": [[0, 1], list(range(2, n))]} if "/" in spec else {}
        for op in build_named(spec, names[:n], length, **extra, **kwargs):
            assert op.device, f"{spec}: {op.type} {op.name} has no device"
            if op.type == "Identity":
                assert op.inputs[0].op.device != op.device, f"{spec}: {op.name} copies onto its own device"


def test_a_ring_between_gpus_forwards_each_chunk_to_the_next_device() -> None:
    ops = build_named("xring", GPUS, 64)
    hops = {
        (index(op.inputs[0].op.device), index(op.device))
        for op in ops
        if op.type in ("Identity", "AddV2") and op.inputs[0].op.device != op.device
    }
    assert hops == {(d, (d + 1) % 4) for d in range(4)}


def test_a_ring_between_cpus_of_one_process_leaves_out_the_all_gather_hops() -> None:
    # The CPUs share memory: the first concatenates the owners' sums, the others copy it.
    ops = build("xring", 4, 64)
    assert sum(op.type == "Identity" for op in ops) == 3
    assert sum(op.type == "ConcatV2" for op in ops) == 1


@pytest.mark.parametrize(("n", "rows"), [(8, 2), (8, 4), (6, 3), (6, 2)])
def test_a_torus_between_gpus_moves_data_only_between_row_and_column_neighbours(n: int, rows: int) -> None:
    grid = torus_grid(n, rows)
    neighbours = set()
    for line in [*grid, *map(list, zip(*grid))]:
        for i in range(len(line)):
            a, b = line[i], line[(i + 1) % len(line)]
            neighbours |= {(a, b), (b, a)} if a != b else set()
    gpus = [f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(n)]
    edges = {
        (index(value.op.device), index(op.device))
        for op in build_named(f"torus#{rows}", gpus, n * 16)
        for value in op.inputs
        if value.op.device != op.device and value.op.type != "Placeholder"
    }
    assert edges and edges <= neighbours, sorted(edges - neighbours)
