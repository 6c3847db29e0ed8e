"""The cost formulas: against the emitted graphs, the textbook formulas, size and levels.

The graph oracle is TensorFlow itself: a TensorFlow 1 graph keeps every op's requested
device, so the bytes crossing devices are the tensors consumed on another device than
the one that made them, each (tensor, destination) once, as TensorFlow sends them.
Graphs are built, never run, for GPU names, for CPUs of one worker (where hops hand
buffers over) and for several workers.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import tensorflow as tf
from hypothesis import assume, given
from hypothesis import strategies as st

import allreduce
from allreduce.planning.cost import Job, schedule_of
from allreduce.planning.cost_model import DEFAULT, bucket_costs
from allreduce.planning.registry import algorithm_names, get_algorithm
from allreduce.planning.spec import parse_all_reduce_spec
from allreduce.planning.traffic import Round, Schedule, features

DTYPES = {tf.float32: 4, tf.float64: 8, tf.float16: 2, tf.int32: 4}


def names(kind: str, workers: int, per_worker: int) -> list[str]:
    job = "localhost" if workers == 1 else "worker"
    return [
        f"/job:{job}/replica:0/task:{t}/device:{kind}:{i}" for t in range(workers) for i in range(per_worker)
    ]


def _with_formula(name: str) -> bool:
    info = get_algorithm(name)
    return info.cost is not None and info.emulable and info.reduces


FLAT = [n for n in algorithm_names() if _with_formula(n)]
COMPOSABLE = [n for n in FLAT if get_algorithm(n).composable]


def emitted(devices, sizes, spec, dtype, groups=None) -> tuple[list[tf.Operation], list[list[tf.Tensor]]]:
    """The ops ``batch_all_reduce`` emits (in creation order) and its results, in a
    TensorFlow 1 graph of placeholders (built, never run)."""
    with tf.Graph().as_default() as graph:
        towers = []
        for d in devices:
            with tf.device(d):
                towers.append([tf.compat.v1.placeholder(dtype, [n]) for n in sizes])
        before = set(graph.get_operations())
        results = allreduce.batch_all_reduce(towers, spec, devices=devices, worker_groups=groups)
        ops = [op for op in graph.get_operations() if op not in before]
    return ops, results


def graph_traffic(
    devices: list[str], sizes: list[int], spec: str, dtype: tf.DType, groups=None
) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes each device sends and receives across devices in the graph of ``batch_all_reduce``."""
    ops, _ = emitted(devices, sizes, spec, dtype, groups)
    seen, sent, received = set(), defaultdict(int), defaultdict(int)
    for op in ops:
        for t in op.inputs:
            if t.op.device != op.device and (t.name, op.device) not in seen:
                seen.add((t.name, op.device))
                nbytes = t.shape.num_elements() * t.dtype.size
                sent[t.op.device] += nbytes
                received[op.device] += nbytes
    return _nonzero(sent), _nonzero(received)


def _nonzero(d: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v}


def model_traffic(devices, sizes, spec, itemsize, groups=None) -> tuple[dict[str, int], dict[str, int]]:
    sent, received = defaultdict(int), defaultdict(int)
    for cost in bucket_costs(parse_all_reduce_spec(spec), devices, sizes, itemsize, worker_groups=groups):
        for k, v in cost.schedule.sent().items():
            sent[k] += v
        for k, v in cost.schedule.received().items():
            received[k] += v
    return _nonzero(sent), _nonzero(received)


@st.composite
def topologies(draw: st.DrawFn) -> tuple[list[str], str]:
    kind = draw(st.sampled_from(["GPU", "CPU"]))
    workers = draw(st.integers(1, 3))
    per_worker = draw(st.integers(1 if workers > 1 else 2, 4))
    hierarchical = workers > 1 and draw(st.booleans())
    alg = (
        f"{draw(st.sampled_from(COMPOSABLE))}/{draw(st.sampled_from(COMPOSABLE))}"
        if hierarchical
        else draw(st.sampled_from(FLAT))
    )
    return names(kind, workers, per_worker), alg


@given(
    topology=topologies(),
    sizes=st.lists(
        st.integers(1, 3000) | st.sampled_from([64, 4096, 262144, 300001]), min_size=1, max_size=3
    ),
    shards=st.integers(1, 4),
    dtype=st.sampled_from(list(DTYPES)),
)
def test_bytes_a_schedule_sends_are_the_bytes_of_the_graphs_cross_device_edges(
    topology, sizes, shards, dtype
):
    devices, alg = topology
    info = get_algorithm(alg)
    if not info.takes_shards or info.problem(devices, shards) is not None:
        shards = 1
    assume(info.problem(devices, shards) is None)
    spec = alg if shards == 1 else f"{alg}#{shards}"
    assert model_traffic(devices, sizes, spec, DTYPES[dtype]) == graph_traffic(devices, sizes, spec, dtype)


@pytest.mark.parametrize("alg", ["pscpu/xring", "xring/rechd", "simple/torus", "better/pscpu"])
def test_hierarchical_bytes_follow_explicit_worker_groups(alg):
    devices = names("GPU", 1, 6)
    groups = [[0, 3], [1, 4, 5], [2]]
    sizes = [1000, 70001]
    assert model_traffic(devices, sizes, alg, 4, groups) == graph_traffic(
        devices, sizes, alg, tf.float32, groups
    )


@pytest.mark.parametrize("alg", ["simple", "better", "pscpu", "pscpu/pscpu"])
@pytest.mark.parametrize("length", [(1 << 18) - 16, 1 << 18])
def test_sums_of_a_mebibyte_or_more_on_a_cpu_hand_its_own_input_over_first(alg, length):
    # sum_on's hop through another CPU starts at exactly 1 MiB (HOP_MIN_BYTES).
    devices = names("CPU", 1, 4)
    assert model_traffic(devices, [length], alg, 4) == graph_traffic(devices, [length], alg, tf.float32)


@pytest.mark.parametrize("alg", ["simple", "better", "pscpu", "pscpu#2", "pscpu/pscpu"])
@pytest.mark.parametrize(("n", "length"), [(4, 1 << 16), (4, 90000), (4, 1 << 15), (8, 1 << 15), (8, 50000)])
def test_sums_cut_in_halves_cost_what_their_graphs_send(alg, n, length):
    # sum_on's two half sums side by side (allreduce.planning.schedules.halves_hosts).
    devices = names("CPU", 1, n)
    assert model_traffic(devices, [length], alg, 4) == graph_traffic(devices, [length], alg, tf.float32)


def _predict(schedule: Schedule, alpha: float, beta: float, gamma: float, link: str, kind: str) -> float:
    f = features(schedule)
    return (
        alpha * f.get(f"alpha:{link}", 0)
        + beta * f.get(f"beta:{link}", 0)
        + gamma * f.get(f"gamma:{kind}", 0)
    )


@given(
    p=st.integers(2, 8),
    chunks=st.integers(1, 64),
    coefficients=st.tuples(*[st.floats(1e-9, 1e-3)] * 3),
)
def test_ring_on_gpus_costs_the_textbook_formula(p, chunks, coefficients):
    # 2(p-1) a + 2n(p-1)/p b + n(p-1)/p g, with n bytes a multiple of p 64-byte rows.
    a, b, g = coefficients
    length = p * 16 * chunks
    n = 4 * length
    schedule = schedule_of(Job(get_algorithm("xring"), tuple(names("GPU", 1, p)), length, 4))
    textbook = 2 * (p - 1) * a + 2 * n * (p - 1) / p * b + n * (p - 1) / p * g
    assert _predict(schedule, a, b, g, "local", "GPU") == pytest.approx(textbook, rel=1e-12)


@given(
    p=st.integers(2, 8),
    blocks=st.integers(1, 64),
    coefficients=st.tuples(*[st.floats(1e-9, 1e-3)] * 3),
)
def test_halving_doubling_costs_rabenseifners_formula_for_any_device_count(p, blocks, coefficients):
    # Power of two: 2 lg p a + 2n(p-1)/p b + n(p-1)/p g. Otherwise the p' = 2^floor(lg p)
    # core runs it after a fold in and before a copy out: 2 more steps, 2n more bytes, n more reduced.
    a, b, g = coefficients
    core = 1 << (p.bit_length() - 1)
    length = core * 16 * blocks
    n = 4 * length
    schedule = schedule_of(Job(get_algorithm("rechd"), tuple(names("GPU", 1, p)), length, 4))
    lg = core.bit_length() - 1
    textbook = 2 * lg * a + 2 * n * (core - 1) / core * b + n * (core - 1) / core * g
    if p > core:
        textbook += 2 * a + 2 * n * b + n * g
    assert _predict(schedule, a, b, g, "local", "GPU") == pytest.approx(textbook, rel=1e-12)


ALL_WITH_FORMULA = [
    n for n in algorithm_names() if get_algorithm(n).cost is not None and get_algorithm(n).reduces
]


@given(
    alg=st.sampled_from([*ALL_WITH_FORMULA, "pscpu/xring", "simple/rechd", "better/torus"]),
    topology=st.sampled_from([("GPU", 1, 4), ("CPU", 1, 4), ("CPU", 2, 2), ("GPU", 2, 3), ("CPU", 1, 3)]),
    rows=st.lists(st.integers(1, 40_000), min_size=2, max_size=2),
    itemsize=st.sampled_from([2, 4, 8]),
)
def test_predicted_time_never_falls_as_size_grows(alg, topology, rows, itemsize):
    # Sizes in whole 128-element blocks, so that every piece of every split is a whole
    # number of 64-byte rows: a split that copies is the one place size is not monotone.
    devices = names(*topology)
    info = get_algorithm(alg)
    assume(info.problem(devices) is None)
    small, large = sorted(128 * r for r in rows)
    costs = [bucket_costs(parse_all_reduce_spec(alg), devices, [n], itemsize) for n in (small, large)]
    times = [DEFAULT.step_seconds(c, devices, 1) for c in costs]
    assert times[0] <= times[1] * (1 + 1e-12)


@given(
    lower=st.sampled_from(COMPOSABLE),
    upper=st.sampled_from(COMPOSABLE),
    workers=st.integers(2, 3),
    per_worker=st.integers(1, 3),
    length=st.integers(1, 100_000),
)
def test_a_hierarchical_plan_costs_the_sum_of_its_levels(lower, upper, workers, per_worker, length):
    devices = names("CPU", workers, per_worker)
    info = get_algorithm(f"{lower}/{upper}")
    assume(info.problem(devices) is None)
    whole = schedule_of(Job(info, tuple(devices), length, 4))
    groups = [list(range(w * per_worker, (w + 1) * per_worker)) for w in range(workers)]
    reduces = get_algorithm(lower).reducer is not None
    parts = [
        schedule_of(Job(get_algorithm(lower), tuple(devices[i] for i in g), length, 4, reduce_only=reduces))
        for g in groups
    ]
    roots = [p.root if reduces and p.root else devices[g[0]] for p, g in zip(parts, groups)]
    top = schedule_of(Job(get_algorithm(upper), tuple(roots), length, 4))
    down = Round()
    for root, group in zip(roots, groups):
        for i in group:
            down.hop(root, devices[i], 4 * length)
    levels = [Schedule().alongside(parts), top, Schedule([down])]
    summed: dict[str, float] = defaultdict(float)
    for level in levels:
        for k, v in features(level).items():
            summed[k] += v
    assert features(whole) == pytest.approx(dict(summed))
    assert DEFAULT.bucket_seconds(_cost(info, whole)) == pytest.approx(
        sum(sum(DEFAULT.params[k] * v for k, v in features(level).items()) for level in levels)
    )


def _cost(info, schedule):
    from allreduce.planning.cost_model import BucketCost
    from allreduce.planning.plan import Bucket
    from allreduce.planning.spec import AllReduceSpecTuple

    bucket = Bucket((0,), (1,), AllReduceSpecTuple(info.name, 1, -1), 0)
    return BucketCost(bucket, schedule, features(schedule))


def test_a_schedule_sends_a_value_to_a_device_once():
    s = Schedule()
    s.at(0).hop("/device:GPU:0", "/device:GPU:1", 8, ("v", 1))
    s.at(1).hop("/device:GPU:0", "/device:GPU:1", 8, ("v", 1))
    s.at(1).hop("/device:GPU:0", "/device:GPU:1", 8)
    assert s.sent() == {"/device:GPU:0": 16}
    assert s.steps == 2


@pytest.mark.parametrize(("kind", "shards"), [("CPU", 1), ("CPU", 2), ("CPU", 3), ("GPU", 1)])
def test_a_shuffle_reducer_moves_what_its_graph_moves(shards, kind):
    # A reducer is a first level: it ignores a shard count, and so does its schedule.
    from allreduce.graph.algorithms.base import BuildContext
    from allreduce.graph.algorithms.shuffle import reduce_on_cpus

    devices = names(kind, 1, 4)
    with tf.Graph().as_default() as graph:
        values = []
        for d in devices:
            with tf.device(d):
                values.append(tf.compat.v1.placeholder(tf.float32, [5000]))
        before = set(graph.get_operations())
        ctx = BuildContext(info=get_algorithm("pscpu"), shards=shards, tensor_index=1)
        _, root = reduce_on_cpus(values, devices, ctx)
        emitted = [op for op in graph.get_operations() if op not in before]
    sent = defaultdict(int)
    for op in emitted:
        for t in op.inputs:
            if t.op.device != op.device:
                sent[t.op.device] += t.shape.num_elements() * 4
    job = Job(get_algorithm("pscpu"), tuple(devices), 5000, 4, shards, 1, reduce_only=True)
    schedule = schedule_of(job)
    assert schedule.root == root
    assert _nonzero(schedule.sent()) == _nonzero(sent)


def test_the_baseline_moves_nothing():
    schedule = schedule_of(Job(get_algorithm("trivial"), tuple(names("GPU", 1, 4)), 1000, 4))
    assert schedule.rounds == [] and features(schedule) == {}


@given(length=st.integers(0, 100_000), parts=st.integers(1, 9), itemsize=st.sampled_from([1, 2, 4, 8]))
def test_the_formulas_cut_tensors_as_the_builders_do(length, parts, itemsize):
    from allreduce.graph.algorithms import base
    from allreduce.planning import cost_steps

    assert (cost_steps.ALIGN_BYTES, cost_steps.HOP_MIN_BYTES) == (base.ALIGN_BYTES, base.HOP_MIN_BYTES)
    assert cost_steps.aligned_split_sizes(length, parts, itemsize) == base.aligned_split_sizes(
        length, parts, itemsize
    )
