"""Every GPU path, proven on a CPU machine: graphs built for GPU device names.

A TensorFlow 1 graph keeps the device each op asks for, and a ``Session`` with soft
placement runs ops pinned to absent GPUs on the CPU. So every GPU-capable spec whose
graph can run that way (the registry's ``emulable``: not NCCL, which has no CPU kernel,
nor collectives, whose members would collapse onto one CPU) is built here for
``/device:GPU:i`` and checked like the CPU algorithms: every output within the oracle's
bound (integers exactly), replicas bitwise identical, and every emitted op asking for the
device the algorithm means (the GPUs, and a worker's CPU only where a shuffle gathers on
CPUs). The API's device checks leave such graphs alone: a session may place them anywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import allreduce
from allreduce.graph.compression import SCALE_SCOPE
from allreduce.planning.devices import parse_device_name
from allreduce.planning.registry import CPU, GPU, algorithm_names, get_algorithm
from tests.cases import Case, Outcome, check_outcome, partition
from tests.oracle import to_float64
from tests.strategies import ALL_TEST_DTYPES, shapes

GPUS = tuple(f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(8))
WORKER_CPU = "/job:localhost/replica:0/task:0/device:CPU:0"


def _emulable_gpu(name: str) -> bool:
    info = get_algorithm(name)
    return GPU in info.device_types and info.emulable and info.reduces


FLAT = [n for n in algorithm_names() if _emulable_gpu(n)]
COMPOSABLE = [n for n in FLAT if get_algorithm(n).composable]
#: Pairs whose upper level can run where the lower one leaves its sums (not ``pscpu/psgpu``:
#: ``pscpu`` sums on a worker's CPU, and ``psgpu`` runs on GPUs only).
PAIRS = [
    f"{a}/{b}"
    for a in COMPOSABLE
    for b in COMPOSABLE
    if get_algorithm(f"{a}/{b}").problem(GPUS[:2], 1, ((0,), (1,))) is None
]
#: pscpu takes GPU inputs and sums on the workers' CPUs.
CPU_GATHER = [n for n in FLAT if get_algorithm(n).gather_type == CPU]


def algorithms_of(spec: str) -> list[str]:
    """The flat algorithm names of every range and level of ``spec``."""
    return [name for item in allreduce.parse_all_reduce_spec(spec) for name in item.alg.split("/")]


def gathers_on_cpu(spec: str) -> bool:
    """Whether any level of ``spec``'s algorithms sums on the workers' CPUs."""
    return any(get_algorithm(n).gather_type == CPU for n in algorithms_of(spec))


def run_in_session(case: Case, batch: int = 0, **kwargs) -> tuple[list[Outcome], list[tf.Operation]]:
    """Builds ``case`` in a TensorFlow 1 graph on GPU names, with ``all_reduce`` or, for
    ``batch > 0``, ``batch_all_reduce`` of that many tensors per device; runs it with soft
    placement; returns one outcome per tensor and the emitted ops."""
    arrays = [case.arrays() for _ in range(max(batch, 1))]
    with tf.Graph().as_default() as graph:
        towers = []
        for d, device in enumerate(case.devices):
            with tf.device(device):
                towers.append([tf.cast(tf.constant(a[d]), case.dtype) for a in arrays])
        before = set(graph.get_operations())
        if batch == 0:
            results = [[t] for t in allreduce.all_reduce([tw[0] for tw in towers], case.spec, **kwargs)]
        else:
            results = allreduce.batch_all_reduce(towers, case.spec, **kwargs)
        emitted = [op for op in graph.get_operations() if op not in before]
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            inputs, outputs = session.run(([tw for tw in towers], results))
    outcomes = []
    for t in range(max(batch, 1)):
        outcomes.append(
            Outcome(
                inputs=[np.asarray(inputs[d][t]).astype(np.float64) for d in range(case.n)],
                outputs=[outputs[d][t] for d in range(case.n)],
                dtypes=[results[d][t].dtype for d in range(case.n)],
                placed=[results[d][t].device for d in range(case.n)],
            )
        )
    return outcomes, emitted


def check_placement(spec: str, devices: tuple[str, ...], emitted: list[tf.Operation]) -> None:
    """No op without a device; ops only on the inputs' GPUs, or on the worker CPU where
    the spec gathers on CPUs; sums on GPUs for GPU gathers and on the CPU for CPU ones."""
    allowed = set(devices) | ({WORKER_CPU} if gathers_on_cpu(spec) else set())
    for op in emitted:
        assert op.device, f"{op.type} {op.name} has no device"
        assert op.device in allowed, f"{op.type} {op.name} on {op.device}, expected one of {sorted(allowed)}"
    # The fp16 scale is a few integer scalars worked out on the first input's device.
    sums = [op for op in emitted if op.type in ("AddN", "AddV2") and f"{SCALE_SCOPE}/" not in op.name]
    kinds = {parse_device_name(op.device).device_type for op in sums}
    if set(algorithms_of(spec)) <= set(CPU_GATHER) and sums:
        assert kinds == {CPU}, f"{spec} sums on {kinds}"
    elif not gathers_on_cpu(spec):
        assert kinds <= {GPU}, f"{spec} sums on {kinds}"


@st.composite
def gpu_named_cases(draw: st.DrawFn) -> Case:
    hierarchical = draw(st.booleans())
    alg = draw(st.sampled_from(PAIRS if hierarchical else FLAT))
    n = draw(st.integers(1, 8))
    devices = GPUS[:n]
    groups = None
    if hierarchical:
        order = draw(st.permutations(range(n)))
        groups = partition(order, sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=n - 1))))
    info = get_algorithm(alg)
    valid = [
        k for k in range(1, 9) if (info.takes_shards or k == 1) and info.problem(devices, k, groups) is None
    ]
    shards = draw(st.sampled_from(valid))
    dtype = draw(st.sampled_from(ALL_TEST_DTYPES))
    return Case(
        spec=alg if shards == 1 else f"{alg}#{shards}",
        devices=devices,
        shape=draw(shapes),
        dtype=dtype,
        reduction="sum" if dtype.is_integer else draw(st.sampled_from(["sum", "mean"])),
        groups=groups,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@given(gpu_named_cases())
def test_gpu_named_graphs_match_numpy_sum_and_ask_for_the_right_devices(case: Case) -> None:
    outcomes, emitted = run_in_session(case, reduction=case.reduction, worker_groups=case.groups)
    check_outcome(case, outcomes[0])
    check_placement(case.spec, case.devices, emitted)


@given(
    n=st.integers(1, 8),
    low=st.sampled_from(FLAT),
    high=st.sampled_from(FLAT),
    limit=st.integers(0, 40),
    count=st.integers(1, 6),
    pack=st.sampled_from([0, 16, 1024]),
    seed=st.integers(0, 2**32 - 1),
)
def test_gpu_named_batches_with_ranges_and_packing(n, low, high, limit, count, pack, seed) -> None:
    spec = f"{low}:{limit}:{high}"
    case = Case(spec, GPUS[:n], (3, 2), tf.float32, seed=seed)
    outcomes, emitted = run_in_session(case, batch=count, pack_max_bytes=pack, pack_max_group=4)
    for outcome in outcomes:
        check_outcome(case, outcome)
    check_placement(spec, case.devices, emitted)


@pytest.mark.parametrize("spec", [*FLAT, "psgpu/xring", "xring/pscpu", "rechd/xring#2", "psgpu/pscpu"])
def test_every_emulable_gpu_spec_builds_without_device_checks(spec: str) -> None:
    # GPU names on a machine without GPUs: eagerly a ValueError, in a graph for a session none.
    case = Case(spec, GPUS[:4], (5,), tf.float32, groups=((0, 1), (2, 3)) if "/" in spec else None)
    outcomes, emitted = run_in_session(case, worker_groups=case.groups)
    check_outcome(case, outcomes[0])
    check_placement(spec, case.devices, emitted)
    with pytest.raises(ValueError, match="does not exist"):
        allreduce.all_reduce([tf.ones([5])] * 4, spec, devices=list(GPUS[:4]), worker_groups=case.groups)


def test_a_level_that_cannot_take_the_other_levels_sums_is_refused_before_building() -> None:
    # pscpu leaves each worker's sum on its CPU, which psgpu cannot take.
    with tf.Graph().as_default() as graph:
        values = []
        for device in GPUS[:4]:
            with tf.device(device):
                values.append(tf.ones([5]))
        before = len(graph.get_operations())
        with pytest.raises(ValueError, match="pscpu/psgpu across workers: algorithm 'psgpu' runs on GPU"):
            allreduce.all_reduce(values, "pscpu/psgpu", worker_groups=[[0, 1], [2, 3]])
        assert len(graph.get_operations()) == before


def test_inputs_read_back_unchanged() -> None:
    case = Case("xring#2", GPUS[:3], (4,), tf.float64, seed=7)
    outcomes, _ = run_in_session(case)
    expected = [np.asarray(a, np.float64) for a in case.arrays()]
    assert all(np.array_equal(got, want) for got, want in zip(outcomes[0].inputs, expected))
    assert to_float64(tf.constant(outcomes[0].outputs[0])).shape == (4,)


@given(gpu_named_cases(), st.sampled_from(["bf16", "fp16"]))
def test_gpu_named_graphs_compressed_between_gpus_stay_within_the_stated_bound(case: Case, wire: str) -> None:
    case = Case(
        case.spec, case.devices, case.shape, tf.float32, case.reduction, groups=case.groups, seed=case.seed
    )
    outcomes, emitted = run_in_session(
        case, reduction=case.reduction, worker_groups=case.groups, compression=wire
    )
    inputs = outcomes[0].inputs
    stated = allreduce.error_bound(
        case.spec, case.n, wire, dtype="float32", worker_groups=case.groups, reduction=case.reduction
    )
    # The stated bound is of the result itself: for a mean its factors are divided already.
    magnitude = np.sum(np.abs(np.stack(inputs)), axis=0) if inputs[0].size else np.zeros(case.shape)
    largest = max((float(np.max(np.abs(x))) for x in inputs if x.size), default=0.0)
    bound = stated.limit(magnitude, largest)
    check_outcome(case, outcomes[0], bound=bound)
    check_placement(case.spec, case.devices, emitted)
    if case.n > 1 and inputs[0].size and not gathers_on_cpu(case.spec):
        assert any(op.type == "Cast" for op in emitted), f"{case.spec}: nothing was compressed"
