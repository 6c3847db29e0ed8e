"""Every CPU algorithm against the float64 numpy oracle, on 1-8 logical CPUs.

For each example: every output equals the exact sum (or mean) within the rounding
bound of its dtype and device count (integers exactly), sits on its input's device,
and is bitwise identical to the other outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import allreduce
from allreduce.planning.registry import CPU, algorithm_names, get_algorithm
from tests.cases import Case, Outcome, check_outcome, partition, placement, run_case
from tests.oracle import to_float64
from tests.strategies import ALL_TEST_DTYPES, cpu, make_tensor, random_values, shapes

CPU_REDUCING = [
    n for n in algorithm_names() if CPU in get_algorithm(n).device_types and get_algorithm(n).reduces
]
CPU_COMPOSABLE = [n for n in CPU_REDUCING if get_algorithm(n).composable]


@st.composite
def partitions(draw: st.DrawFn, n: int) -> tuple[tuple[int, ...], ...]:
    """A random grouping of 0..n-1 into workers (contiguous or shuffled)."""
    order = draw(st.permutations(range(n)))
    cuts = draw(st.sets(st.integers(1, max(1, n - 1)), max_size=n - 1)) if n > 1 else set()
    return partition(order, sorted(cuts))


@st.composite
def cases(draw: st.DrawFn, alg: str | None = None, devices: Sequence[str] | None = None) -> Case:
    """A case of ``alg`` (or of a random hierarchical pair) on 1-8 of ``devices``
    (default: the logical CPUs), with a shard count the registry accepts there."""
    if alg is None:
        alg = f"{draw(st.sampled_from(CPU_COMPOSABLE))}/{draw(st.sampled_from(CPU_COMPOSABLE))}"
    pool = list(devices) if devices is not None else [cpu(i) for i in range(8)]
    n = draw(st.integers(1, len(pool)))
    chosen = tuple(pool[:n])
    groups = draw(partitions(n)) if "/" in alg else None
    info = get_algorithm(alg)
    # The shard counts the registry says this algorithm honours on these devices.
    valid = [k for k in range(1, 9) if info.takes_shards or k == 1]
    shards = draw(st.sampled_from([k for k in valid if info.problem(chosen, k, groups) is None]))
    dtype = draw(st.sampled_from(ALL_TEST_DTYPES))
    return Case(
        spec=alg if shards == 1 else f"{alg}#{shards}",
        devices=chosen,
        shape=draw(shapes),
        dtype=dtype,
        reduction="sum" if dtype.is_integer else draw(st.sampled_from(["sum", "mean"])),
        graph=draw(st.booleans()),
        groups=groups,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@pytest.mark.parametrize("alg", CPU_REDUCING)
@given(data=st.data())
def test_all_reduce_matches_numpy_sum(alg: str, data: st.DataObject) -> None:
    case = data.draw(cases(alg))
    check_outcome(case, run_case(case))


SHARDED = [n for n in CPU_REDUCING if get_algorithm(n).takes_shards]


@pytest.mark.parametrize("alg", SHARDED)
@given(n=st.integers(1, 8), shards=st.integers(2, 12))
def test_shard_counts_the_registry_refuses_raise_its_reason(alg: str, n: int, shards: int) -> None:
    devices = [cpu(i) for i in range(n)]
    problem = get_algorithm(alg).problem(devices, shards)
    tensors = [make_tensor(np.ones([3]), tf.float32, d) for d in devices]
    if problem is None:
        outputs = allreduce.all_reduce(tensors, f"{alg}#{shards}")
        assert all(np.all(out.numpy() == n) for out in outputs)
    else:
        with pytest.raises(ValueError) as info:
            allreduce.all_reduce(tensors, f"{alg}#{shards}")
        assert str(info.value) == problem and str(shards) in problem


@given(cases())
def test_hierarchical_all_reduce_matches_numpy_sum(case: Case) -> None:
    check_outcome(case, run_case(case))


@given(st.integers(1, 8), shapes, st.booleans())
def test_trivial_returns_each_input(n: int, shape: tuple, graph: bool) -> None:
    rng = np.random.default_rng(n)
    tensors = [make_tensor(random_values(rng, shape, tf.float32), tf.float32, cpu(i)) for i in range(n)]
    if graph:
        devices = [cpu(i) for i in range(n)]
        outputs = tf.function(lambda *xs: allreduce.all_reduce(list(xs), "trivial", devices=devices))(
            *tensors
        )
    else:
        outputs = allreduce.all_reduce(tensors, "trivial")
    for out, t in zip(outputs, tensors):
        assert out.numpy().tobytes() == t.numpy().tobytes()


@given(st.integers(0, 40), st.integers(0, 40))
def test_spec_ranges_select_by_element_count(limit: int, size: int) -> None:
    # "trivial" leaves its inputs alone, so it shows which range a tensor went to.
    devices = [cpu(0), cpu(1)]
    tensors = [make_tensor(np.full([size], i + 1.0), tf.float32, d) for i, d in enumerate(devices)]
    out = allreduce.all_reduce(tensors, f"trivial:{limit}:xring")
    expected = 1.0 if size <= limit else 3.0
    assert np.all(out[0].numpy() == expected)


@st.composite
def batch_cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 6))
    count = draw(st.integers(0, 10))
    dtypes = draw(st.lists(st.sampled_from(ALL_TEST_DTYPES), min_size=count, max_size=count))
    first = draw(st.sampled_from(CPU_REDUCING))
    last = draw(st.sampled_from(CPU_REDUCING))
    spec = draw(st.sampled_from([first, f"{first}:{draw(st.integers(0, 30))}:{last}"]))
    return dict(
        n=n,
        shapes=draw(st.lists(shapes, min_size=count, max_size=count)),
        dtypes=dtypes,
        spec=spec,
        mean=draw(st.booleans()) and not any(d.is_integer for d in dtypes),
        pack_max_bytes=draw(st.sampled_from([0, 8, 64, 1024])),
        pack_max_group=draw(st.integers(1, 5)),
        graph=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@given(batch_cases())
def test_batch_all_reduce_matches_numpy_sum(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    n = case["n"]
    devices = [cpu(i) for i in range(n)]
    arrays = [[random_values(rng, s, dt) for s, dt in zip(case["shapes"], case["dtypes"])] for _ in range(n)]
    towers = [[make_tensor(a, dt, devices[d]) for a, dt in zip(arrays[d], case["dtypes"])] for d in range(n)]
    kwargs = dict(
        reduction="mean" if case["mean"] else "sum",
        pack_max_bytes=case["pack_max_bytes"],
        pack_max_group=case["pack_max_group"],
    )
    if case["graph"]:
        function = tf.function(
            lambda towers: allreduce.batch_all_reduce(towers, case["spec"], devices=devices, **kwargs),
            autograph=False,
        )
        result = function(towers)
        graph = function.get_concrete_function(towers).graph
        placed = [[placement(t) for t in tower] for tower in graph.structured_outputs]
    else:
        result = allreduce.batch_all_reduce(towers, case["spec"], **kwargs)
        placed = [[t.device for t in tower] for tower in result]
    assert len(result) == n
    for i, dtype in enumerate(case["dtypes"]):
        column = Case("", tuple(devices), case["shapes"][i], dtype, kwargs["reduction"])
        outcome = Outcome(
            inputs=[to_float64(towers[d][i]) for d in range(n)],
            outputs=[result[d][i].numpy() for d in range(n)],
            dtypes=[result[d][i].dtype for d in range(n)],
            placed=[placed[d][i] for d in range(n)],
        )
        check_outcome(column, outcome)


UNPLACED_OP_TYPES = {"Placeholder", "NoOp"}


@pytest.mark.parametrize(
    "spec", [*CPU_REDUCING, "trivial", "xring#3", "pscpu#2", "pscpu/xring", "rechd/pscpu"]
)
@pytest.mark.parametrize("n", [3, 5])
def test_every_op_is_placed_explicitly(spec: str, n: int) -> None:
    # Ops without a device would go wherever TensorFlow's placer puts them; every op the
    # library emits names its device (the outputs' device-less wrappers come from tf.function).
    devices = [cpu(i) for i in range(n)]
    tensors = [make_tensor(np.ones([10]), tf.float32, d) for d in devices]
    function = tf.function(
        lambda *xs: allreduce.all_reduce(list(xs), spec, devices=devices, reduction="mean"),
        autograph=False,
    )
    graph = function.get_concrete_function(*tensors).graph
    outputs = {t.op.name for t in graph.outputs}
    unplaced = [
        f"{op.type} {op.name}"
        for op in graph.get_operations()
        if not op.device and op.type not in UNPLACED_OP_TYPES and op.name not in outputs
    ]
    assert unplaced == []


@pytest.mark.parametrize("spec", ["pscpu", "pscpu#2", "simple", "better", "pscpu/pscpu"])
@given(
    n=st.integers(4, 8),
    dtype=st.sampled_from(ALL_TEST_DTYPES),
    graph=st.booleans(),
    offset=st.integers(0, 200),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=8, deadline=None)
def test_sums_cut_in_halves_match_numpy_sum(spec, n, dtype, graph, offset, seed) -> None:
    # Sizes where a CPU sum adds two halves side by side (allreduce.planning.schedules.halves_hosts).
    from allreduce.planning.schedules import HALVES_MIN_BYTES, halves_hosts

    shards = 2 if spec.endswith("#2") else 1
    length = shards * (-(-HALVES_MIN_BYTES // ((n + 1) * dtype.size)) + offset)
    devices = tuple(cpu(i) for i in range(n))
    assert halves_hosts(devices, devices[0], length // shards * dtype.size) is not None
    reduction = "sum" if dtype.is_integer else "mean" if seed % 2 else "sum"
    case = Case(spec, devices, (length,), dtype, reduction, graph=graph, seed=seed)
    check_outcome(case, run_case(case))
