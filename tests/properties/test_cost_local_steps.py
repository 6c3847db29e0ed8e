"""The cost schedules' local steps against the emitted graphs: adds, copies, result labels, rounds.

``test_cost_properties.py`` checks the bytes a schedule moves across devices; this file
checks what each device does on its own, with the graph of ``batch_all_reduce`` (built in
a TensorFlow 1 graph, never run) as the oracle:

- an :class:`~allreduce.planning.traffic.Add` is an ``AddN`` / ``AddV2`` op: its device,
  its number of inputs and the bytes of its output;
- a :class:`~allreduce.planning.traffic.Copy` is a ``ConcatV2`` or a ``SplitV`` of a 1-D
  tensor (a split of a 2-D view of aligned rows shares its input's buffer);
- two devices have equal ``results`` labels exactly when their results are the same
  graph tensor, and a hierarchical spec on one worker, whose broadcast relies on those
  labels, sends what its graph sends;
- on devices that share no memory, a schedule's steps are the longest chain of
  cross-device edges in the graph.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import pytest
import tensorflow as tf
from hypothesis import assume, given
from hypothesis import strategies as st

from allreduce.planning.cost_model import BucketCost, bucket_costs
from allreduce.planning.registry import CPU, get_algorithm
from allreduce.planning.spec import parse_all_reduce_spec
from tests.properties.test_cost_properties import (
    COMPOSABLE,
    DTYPES,
    FLAT,
    emitted,
    graph_traffic,
    model_traffic,
    names,
    topologies,
)

ADDS = ("AddN", "Add", "AddV2")
SIZES = st.lists(st.integers(1, 3000) | st.sampled_from([64, 4096, 262144, 300001]), min_size=1, max_size=3)


def _nbytes(t: tf.Tensor) -> int:
    return t.shape.num_elements() * t.dtype.size


def graph_adds(ops) -> Counter:
    """``(device, inputs, output bytes)`` of every addition."""
    return Counter((op.device, len(op.inputs), _nbytes(op.outputs[0])) for op in ops if op.type in ADDS)


def graph_copies(ops) -> dict[str, int]:
    """Bytes each device writes in concatenations and in splits of 1-D tensors."""
    out: dict[str, int] = defaultdict(int)
    for op in ops:
        if op.type == "ConcatV2" or (op.type == "SplitV" and op.inputs[0].shape.rank == 1):
            out[op.device] += sum(_nbytes(t) for t in op.outputs)
    return {k: v for k, v in out.items() if v}


def costs_of(devices, sizes, spec, itemsize, groups=None) -> list[BucketCost]:
    return bucket_costs(parse_all_reduce_spec(spec), devices, sizes, itemsize, worker_groups=groups)


def model_adds(costs) -> Counter:
    return Counter(tuple(a) for c in costs for r in c.schedule.rounds for a in r.adds)


def model_copies(costs) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for c in costs:
        for r in c.schedule.rounds:
            for copy in r.copies:
                out[copy.device] += copy.nbytes
    return {k: v for k, v in out.items() if v}


def _spec(alg: str, devices: list[str], shards: int) -> str:
    info = get_algorithm(alg)
    if not info.takes_shards or info.problem(devices, shards) is not None:
        shards = 1
    assume(info.problem(devices, shards) is None)
    return alg if shards == 1 else f"{alg}#{shards}"


@st.composite
def any_topology(draw: st.DrawFn) -> tuple[list[str], str]:
    """As ``topologies``, and hierarchical specs on one worker too (one group)."""
    devices, alg = draw(topologies())
    if "/" not in alg and draw(st.integers(0, 3)) == 0:
        alg = f"{draw(st.sampled_from(COMPOSABLE))}/{draw(st.sampled_from(COMPOSABLE))}"
    return devices, alg


@given(topology=any_topology(), sizes=SIZES, shards=st.integers(1, 4), dtype=st.sampled_from(list(DTYPES)))
def test_a_schedules_adds_are_the_graphs_additions(topology, sizes, shards, dtype):
    devices, alg = topology
    spec = _spec(alg, devices, shards)
    ops, _ = emitted(devices, sizes, spec, dtype)
    assert model_adds(costs_of(devices, sizes, spec, DTYPES[dtype])) == graph_adds(ops)


@given(topology=any_topology(), sizes=SIZES, shards=st.integers(1, 4), dtype=st.sampled_from(list(DTYPES)))
def test_a_schedules_copies_are_the_bytes_the_graphs_joins_and_copying_splits_write(
    topology, sizes, shards, dtype
):
    devices, alg = topology
    spec = _spec(alg, devices, shards)
    ops, _ = emitted(devices, sizes, spec, dtype)
    assert model_copies(costs_of(devices, sizes, spec, DTYPES[dtype])) == graph_copies(ops)


def _label_pairs(costs, results, devices) -> tuple[list, list]:
    """Per pair of devices with labels, (labels equal, results the same tensor)."""
    model, graph = [], []
    for c in costs:
        (i,) = c.bucket.members
        labels = c.schedule.results
        for a, b in itertools.combinations(range(len(devices)), 2):
            if devices[a] in labels and devices[b] in labels:
                model.append((c.bucket.index, a, b, labels[devices[a]] == labels[devices[b]]))
                graph.append((c.bucket.index, a, b, results[a][i].name == results[b][i].name))
    return model, graph


@given(topology=any_topology(), sizes=SIZES, shards=st.integers(1, 4), dtype=st.sampled_from(list(DTYPES)))
def test_two_devices_have_equal_result_labels_iff_their_results_are_one_graph_tensor(
    topology, sizes, shards, dtype
):
    devices, alg = topology
    spec = _spec(alg, devices, shards)
    _, results = emitted(devices, sizes, spec, dtype)
    costs = costs_of(devices, sizes, spec, DTYPES[dtype])
    model, graph = _label_pairs(costs, results, devices)
    assert model == graph
    # Labels of one schedule never name another's values.
    labelled = [{v for v in c.schedule.results.values()} for c in costs]
    assert sum(map(len, labelled)) == len(set().union(*labelled))


@given(
    kind=st.sampled_from(["GPU", "CPU"]),
    n=st.integers(2, 5),
    lower=st.sampled_from(COMPOSABLE),
    upper=st.sampled_from(COMPOSABLE),
    sizes=SIZES,
    dtype=st.sampled_from(list(DTYPES)),
)
def test_a_hierarchical_spec_on_one_worker_sends_each_value_to_a_device_once(
    kind, n, lower, upper, sizes, dtype
):
    # One group: the broadcast sends the lower level's result, which the lower level's
    # own all-reduce may have sent already; its label says so (TensorFlow sends it once).
    devices = names(kind, 1, n)
    spec = _spec(f"{lower}/{upper}", devices, 1)
    assert model_traffic(devices, sizes, spec, DTYPES[dtype]) == graph_traffic(devices, sizes, spec, dtype)


def longest_chain(ops, results) -> int:
    """The most cross-device edges on one path to a result (ops no result needs left out)."""
    live: set[tf.Operation] = set()
    stack = [t.op for tower in results for t in tower]
    while stack:
        op = stack.pop()
        if op not in live:
            live.add(op)
            stack += [t.op for t in op.inputs]
    depth: dict[tf.Operation, int] = {}
    for op in ops:
        if op in live:
            depth[op] = max((depth.get(t.op, 0) + (t.op.device != op.device) for t in op.inputs), default=0)
    return max(depth.values(), default=0)


@given(
    alg=st.sampled_from(FLAT),
    workers=st.integers(1, 3),
    per_worker=st.integers(1, 4),
    length=st.integers(1, 3000) | st.sampled_from([64, 4096, 300001]),
    shards=st.integers(1, 4),
    dtype=st.sampled_from(list(DTYPES)),
)
def test_a_schedules_steps_are_the_longest_chain_of_cross_device_edges_in_its_graph(
    alg, workers, per_worker, length, shards, dtype
):
    # GPUs share no memory, so no hop is left out or handed over within a round.
    devices = names("GPU", workers, per_worker)
    assume(len(devices) > 1)
    spec = _spec(alg, devices, shards)
    ops, results = emitted(devices, [length], spec, dtype)
    (cost,) = costs_of(devices, [length], spec, DTYPES[dtype])
    assert cost.schedule.steps == longest_chain(ops, results)


@given(
    alg=st.sampled_from(
        [n for n in FLAT if get_algorithm(n).reducer and CPU in get_algorithm(n).device_types]
    ),
    workers=st.integers(1, 3),
    per_worker=st.integers(2, 4),
    length=st.sampled_from([1000, 300001, 1 << 20]),
    dtype=st.sampled_from(list(DTYPES)),
)
def test_a_sum_on_one_cpu_takes_the_steps_of_its_graph(alg, workers, per_worker, length, dtype):
    # A large sum on a CPU first hands that CPU's own inputs to another CPU of its worker
    # and takes them back: two steps before the copies out, as in the graph.
    devices = names("CPU", workers, per_worker)
    ops, results = emitted(devices, [length], alg, dtype)
    (cost,) = costs_of(devices, [length], alg, DTYPES[dtype])
    assert cost.schedule.steps == longest_chain(ops, results)


#: Every kind of placement the formulas tell apart: CPUs of one worker (their hops hand
#: buffers over and one join serves them all), GPUs of one worker, and several workers.
PLACEMENTS = {
    "3 CPUs": names("CPU", 1, 3),
    "4 CPUs": names("CPU", 1, 4),
    "5 GPUs": names("GPU", 1, 5),
    "2x2 GPUs": names("GPU", 2, 2),
    "3x1 CPUs": names("CPU", 3, 1),
}


@pytest.mark.parametrize("placement", list(PLACEMENTS))
@pytest.mark.parametrize("alg", FLAT)
def test_every_formula_on_every_kind_of_placement_follows_its_graph(alg, placement):
    # The properties above draw these too, but not each one every time.
    devices = PLACEMENTS[placement]
    info = get_algorithm(alg)
    if info.problem(devices) is not None:
        pytest.skip(info.problem(devices))
    for sizes in ([1], [1000, 7], [300001]):
        ops, results = emitted(devices, sizes, alg, tf.float32)
        costs = costs_of(devices, sizes, alg, 4)
        assert model_adds(costs) == graph_adds(ops), sizes
        assert model_copies(costs) == graph_copies(ops), sizes
        assert model_traffic(devices, sizes, alg, 4) == graph_traffic(devices, sizes, alg, tf.float32), sizes
        model, graph = _label_pairs(costs, results, devices)
        assert model == graph, sizes
        if len(costs) == 1 and "CPU" not in placement:  # the steps test above says why GPUs
            assert costs[0].schedule.steps == longest_chain(ops, results), sizes
