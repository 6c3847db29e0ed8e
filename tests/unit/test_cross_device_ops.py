"""SpecCrossDeviceOps against tf.distribute.ReductionToOneDevice and the numpy oracle.

Every result is checked on every destination device. Values are integer-valued floats
where results are compared exactly with ReductionToOneDevice (any summation order is
then exact), and random floats where they are compared with the oracle's bound.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

import allreduce.api
from allreduce.cross_device_ops import SpecCrossDeviceOps
from tests.oracle import exact_sum, to_float64, tolerance
from tests.strategies import cpu

NUM_REPLICAS = 4
DEVICES = [cpu(i) for i in range(NUM_REPLICAS)]
OTHER_DEVICE = "/job:localhost/replica:0/task:0/device:CPU:6"
SUM, MEAN = tf.distribute.ReduceOp.SUM, tf.distribute.ReduceOp.MEAN
SPECS = ["xring", "pscpu", "rechd", "pscpu:1k:xring#2", "xring#3"]


@pytest.fixture(scope="module")
def strategy() -> tf.distribute.MirroredStrategy:
    return tf.distribute.MirroredStrategy(DEVICES, cross_device_ops=SpecCrossDeviceOps("xring"))


def per_replica(
    strategy: tf.distribute.Strategy, arrays: list[np.ndarray]
) -> tf.distribute.DistributedValues:
    def make(ctx: tf.distribute.experimental.ValueContext) -> tf.Tensor:
        r = ctx.replica_id_in_sync_group
        with tf.device(strategy.extended.worker_devices[r]):
            return tf.identity(tf.constant(arrays[r]))  # an eager constant alone stays on the host

    return strategy.experimental_distribute_values_from_function(make)


def per_replica_slices(
    strategy: tf.distribute.Strategy, rows: list[np.ndarray], values: list[np.ndarray], dense_shape: list[int]
) -> tf.distribute.DistributedValues:
    def make(ctx: tf.distribute.experimental.ValueContext) -> tf.IndexedSlices:
        r = ctx.replica_id_in_sync_group
        with tf.device(strategy.extended.worker_devices[r]):
            return tf.IndexedSlices(
                tf.identity(tf.constant(values[r])),
                tf.identity(tf.constant(rows[r], tf.int64)),
                tf.identity(tf.constant(dense_shape, tf.int64)),
            )

    return strategy.experimental_distribute_values_from_function(make)


def integer_arrays(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: str = "float32"
) -> list[np.ndarray]:
    return [rng.integers(-50, 50, shape).astype(dtype) for _ in range(NUM_REPLICAS)]


def results_by_device(value: object) -> dict[str, np.ndarray]:
    """Each destination's result as a dense array, keyed by the device it lives on."""
    parts = value.values if isinstance(value, tf.distribute.DistributedValues) else (value,)
    out = {}
    for part in parts:
        device = (part.values if isinstance(part, tf.IndexedSlices) else part).device
        out[device] = np.asarray(tf.convert_to_tensor(part))
    return out


def assert_same_results(ours: object, reference: object) -> None:
    got, want = results_by_device(ours), results_by_device(reference)
    assert sorted(got) == sorted(want)
    for device in want:
        np.testing.assert_array_equal(got[device], want[device], err_msg=device)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("reduce_op", [SUM, MEAN])
def test_dense_reduce_equals_reduction_to_one_device(strategy, spec: str, reduce_op) -> None:
    rng = np.random.default_rng(1)
    value = per_replica(strategy, integer_arrays(rng, (5, 7)))
    ours = SpecCrossDeviceOps(spec).reduce(reduce_op, value, destinations=value)
    reference = tf.distribute.ReductionToOneDevice().reduce(reduce_op, value, destinations=value)
    assert_same_results(ours, reference)
    assert [v.device for v in ours.values] == DEVICES


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("reduce_op", [SUM, MEAN])
def test_dense_reduce_is_within_oracle_bound_and_bitwise_identical(strategy, spec: str, reduce_op) -> None:
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((3, 1000)).astype(np.float32) for _ in range(NUM_REPLICAS)]
    ours = SpecCrossDeviceOps(spec).reduce(reduce_op, per_replica(strategy, arrays), destinations=DEVICES[0])
    # A single destination comes back as a plain tensor, as with TensorFlow's own ops.
    assert tf.is_tensor(ours) and ours.device == DEVICES[0]
    mean = reduce_op == MEAN
    want = exact_sum(arrays) / (NUM_REPLICAS if mean else 1)
    bound = tolerance(arrays, tf.float32, mean)
    assert np.all(np.abs(to_float64(ours) - want) <= bound)
    everywhere = SpecCrossDeviceOps(spec).reduce(
        reduce_op, per_replica(strategy, arrays), destinations=DEVICES[1]
    )
    assert everywhere.numpy().tobytes() == ours.numpy().tobytes()


@pytest.mark.parametrize("reduce_op", [SUM, MEAN])
@pytest.mark.parametrize("densify_max_elements", [0, 10_000])
def test_sparse_reduce_equals_reduction_to_one_device(strategy, reduce_op, densify_max_elements: int) -> None:
    rng = np.random.default_rng(3)
    dense_shape = [50, 4]
    rows = [rng.integers(0, 50, 6) for _ in range(NUM_REPLICAS)]  # repeats within and across replicas
    values = [rng.integers(-9, 9, (6, 4)).astype(np.float32) for _ in range(NUM_REPLICAS)]
    value = per_replica_slices(strategy, rows, values, dense_shape)
    ops = SpecCrossDeviceOps("xring", densify_max_elements=densify_max_elements)
    ours = ops.reduce(reduce_op, value, destinations=value)
    reference = tf.distribute.ReductionToOneDevice().reduce(reduce_op, value, destinations=value)
    assert_same_results(ours, reference)
    oracle = np.zeros(dense_shape)
    for r, v in zip(rows, values):
        np.add.at(oracle, r, v)
    oracle /= NUM_REPLICAS if reduce_op == MEAN else 1
    for got in results_by_device(ours).values():
        np.testing.assert_array_equal(got, oracle)
    densified = densify_max_elements >= 200
    assert all(isinstance(v, tf.IndexedSlices) != densified for v in ours.values)


def test_large_sparse_value_is_gathered_not_densified(strategy, monkeypatch) -> None:
    """A 10^8-element table below no threshold stays IndexedSlices: the gather moves rows only."""
    calls = []
    real = allreduce.api.batch_all_reduce
    monkeypatch.setattr(allreduce.api, "batch_all_reduce", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = [np.array([r, 7]) for r in range(NUM_REPLICAS)]
    values = [np.full((2, 1000), r + 1, np.float32) for r in range(NUM_REPLICAS)]
    value = per_replica_slices(strategy, rows, values, [100_000, 1000])
    ours = SpecCrossDeviceOps("xring", densify_max_elements=1_000_000).reduce(SUM, value, destinations=value)
    assert calls == []
    for device, part in zip(DEVICES, ours.values):
        assert isinstance(part, tf.IndexedSlices) and part.values.device == device
        np.testing.assert_array_equal(part.indices.numpy(), [0, 7, 1, 7, 2, 7, 3, 7])
        np.testing.assert_array_equal(part.values.numpy()[::2, 0], [1, 2, 3, 4])


@pytest.mark.parametrize("pack_max_bytes", [0, 4096])
@pytest.mark.parametrize("reduce_op", [SUM, MEAN])
def test_batch_reduce_mixed_values_equals_reduction_to_one_device(
    strategy, pack_max_bytes: int, reduce_op
) -> None:
    rng = np.random.default_rng(4)
    shapes = [(3,), (), (40, 30), (2, 2), (1, 5)]
    dense = [per_replica(strategy, integer_arrays(rng, shape)) for shape in shapes]
    dense.append(per_replica(strategy, integer_arrays(rng, (4,), "float64")))
    rows = [rng.integers(0, 9, 3) for _ in range(NUM_REPLICAS)]
    sparse = per_replica_slices(strategy, rows, integer_arrays(rng, (3, 2)), [9, 2])
    values = [*dense[:2], sparse, *dense[2:]]
    pairs = [(v, v) for v in values]
    ops = SpecCrossDeviceOps("pscpu:100:xring", pack_max_bytes=pack_max_bytes)
    ours = ops.batch_reduce(reduce_op, pairs)
    reference = tf.distribute.ReductionToOneDevice().batch_reduce(reduce_op, pairs)
    assert len(ours) == len(values)
    for got, want in zip(ours, reference):
        assert_same_results(got, want)


def test_destinations_other_than_the_inputs(strategy) -> None:
    """Reduced with the spec over the inputs' devices, then copied where asked."""
    rng = np.random.default_rng(5)
    value = per_replica(strategy, integer_arrays(rng, (6,)))
    elsewhere = per_replica(
        tf.distribute.MirroredStrategy([DEVICES[2], OTHER_DEVICE], cross_device_ops=SpecCrossDeviceOps()),
        [np.zeros(1, np.float32)] * 2,
    )
    ops = SpecCrossDeviceOps("pscpu")
    reference = tf.distribute.ReductionToOneDevice()
    for destinations in (OTHER_DEVICE, DEVICES[3], "/cpu:5", elsewhere):
        for reduce_op in (SUM, MEAN):
            ours = ops.reduce(reduce_op, value, destinations=destinations)
            assert_same_results(ours, reference.reduce(reduce_op, value, destinations=destinations))
    got = results_by_device(ops.reduce(SUM, value, destinations=elsewhere))
    assert sorted(got) == sorted([DEVICES[2], OTHER_DEVICE])


def test_strategy_paths_reach_the_spec_algorithms(strategy, monkeypatch) -> None:
    """batch_reduce_to and ReplicaContext.all_reduce (eager and in tf.function) call
    allreduce.api.batch_all_reduce; TensorFlow itself sends strategy.reduce to a CPU
    and int32 values to ReductionToOneDevice."""
    calls: list[str] = []
    real = allreduce.api.batch_all_reduce

    def spy(towers, spec, **kwargs):
        calls.append(spec)
        return real(towers, spec, **kwargs)

    monkeypatch.setattr(allreduce.api, "batch_all_reduce", spy)

    def replica_fn():
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(SUM, tf.fill([3], tf.cast(ctx.replica_id_in_sync_group, tf.float32) + 1.0))

    for eager in (True, False):
        run = (lambda: strategy.run(replica_fn)) if eager else tf.function(lambda: strategy.run(replica_fn))
        calls.clear()
        out = run()
        assert calls == ["xring"]
        assert [v.numpy().tolist() for v in out.values] == [[10.0] * 3] * NUM_REPLICAS
        if eager:  # a tf.function's outputs report the caller's device
            assert [v.device for v in out.values] == DEVICES

    value = per_replica(strategy, [np.full(2, r, np.float32) for r in range(NUM_REPLICAS)])
    calls.clear()
    strategy.extended.batch_reduce_to(MEAN, [(value, value), (value, value)])
    assert calls == ["xring"]  # both values in one batch

    calls.clear()
    strategy.reduce(SUM, value, axis=None)
    ints = per_replica(strategy, [np.full(2, r, np.int32) for r in range(NUM_REPLICAS)])
    strategy.extended.batch_reduce_to(SUM, [(ints, ints)])
    assert calls == []  # TensorFlow's own routing (documented)


def test_int64_sum_uses_the_algorithms_and_integer_mean_falls_back(strategy, monkeypatch, caplog) -> None:
    calls = []
    real = allreduce.api.batch_all_reduce
    monkeypatch.setattr(allreduce.api, "batch_all_reduce", lambda *a, **k: calls.append(1) or real(*a, **k))
    value = per_replica(strategy, [np.full(3, 2**40 + r, np.int64) for r in range(NUM_REPLICAS)])
    ops = SpecCrossDeviceOps("rechd")
    ours = ops.reduce(SUM, value, destinations=value)
    assert calls == [1]
    assert all(v.numpy().tolist() == [4 * 2**40 + 6] * 3 for v in ours.values)
    calls.clear()
    with caplog.at_level(logging.WARNING, logger="allreduce.cross_device_ops"):
        mean = ops.reduce(MEAN, value, destinations=value)
    assert calls == []
    assert "MEAN of int64" in caplog.text and "ReductionToOneDevice" in caplog.text
    assert_same_results(mean, tf.distribute.ReductionToOneDevice().reduce(MEAN, value, destinations=value))


def test_unsupported_dtype_falls_back_with_a_warning(strategy, caplog) -> None:
    value = per_replica(strategy, [np.full(2, 1 + 1j * r, np.complex64) for r in range(NUM_REPLICAS)])
    with caplog.at_level(logging.WARNING, logger="allreduce.cross_device_ops"):
        ours = SpecCrossDeviceOps().reduce(SUM, value, destinations=value)
    assert "dtype complex64" in caplog.text
    assert_same_results(ours, tf.distribute.ReductionToOneDevice().reduce(SUM, value, destinations=value))


def test_unknown_shapes_fall_back_and_mismatched_replicas_are_rejected(strategy, caplog) -> None:
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def reduce_unknown(x):
        value = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.identity(x * tf.cast(ctx.replica_id_in_sync_group + 1, tf.float32))
        )
        return SpecCrossDeviceOps().reduce(SUM, value, destinations=DEVICES[0])

    with caplog.at_level(logging.WARNING, logger="allreduce.cross_device_ops"):
        assert reduce_unknown(tf.constant([1.0, 2.0])).numpy().tolist() == [10.0, 20.0]
    assert "not fully defined" in caplog.text

    mismatched = per_replica(strategy, [np.ones(r + 1, np.float32) for r in range(NUM_REPLICAS)])
    with pytest.raises(ValueError, match=r"different shapes or dtypes: float32\(1,\), float32\(2,\)"):
        SpecCrossDeviceOps().reduce(SUM, mismatched, destinations=mismatched)


def test_mixed_dense_and_sparse_replicas_are_densified(strategy) -> None:
    def make(ctx):
        r = ctx.replica_id_in_sync_group
        with tf.device(strategy.extended.worker_devices[r]):
            if r % 2:
                return tf.IndexedSlices(tf.fill([1, 1], float(r)), tf.fill([1], r), tf.constant([4, 1]))
            return tf.identity(tf.fill([4, 1], float(r)))

    value = strategy.experimental_distribute_values_from_function(make)
    ours = SpecCrossDeviceOps().reduce(SUM, value, destinations=value)
    got = results_by_device(ours)
    assert sorted(got) == DEVICES
    for device in DEVICES:
        assert got[device].ravel().tolist() == [2.0, 3.0, 2.0, 5.0], device


def test_sparse_dense_shape_known_only_at_run_time_is_gathered(strategy, monkeypatch) -> None:
    calls = []
    real = allreduce.api.batch_all_reduce
    monkeypatch.setattr(allreduce.api, "batch_all_reduce", lambda *a, **k: calls.append(1) or real(*a, **k))

    @tf.function(input_signature=[tf.TensorSpec([2], tf.int64)])
    def reduce(dense_shape):
        def make(ctx):
            r = ctx.replica_id_in_sync_group
            with tf.device(strategy.extended.worker_devices[r]):
                return tf.IndexedSlices(tf.fill([1, 2], 1.0), tf.fill([1], tf.cast(r, tf.int64)), dense_shape)

        value = strategy.experimental_distribute_values_from_function(make)
        ops = SpecCrossDeviceOps(densify_max_elements=1000)
        return tf.convert_to_tensor(ops.reduce(MEAN, value, destinations=DEVICES[0]))

    assert reduce(tf.constant([5, 2], tf.int64)).numpy().tolist() == [[0.25, 0.25]] * 4 + [[0.0, 0.0]]
    assert calls == []


def test_check_finite_raises_naming_the_value(strategy) -> None:
    strategy_checked = tf.distribute.MirroredStrategy(
        DEVICES, cross_device_ops=SpecCrossDeviceOps("xring", check_finite=True)
    )

    def replica_fn(bad_replica: int):
        ctx = tf.distribute.get_replica_context()
        bad = tf.equal(ctx.replica_id_in_sync_group, bad_replica)
        x = tf.where(bad, tf.constant([1.0, np.inf]), tf.constant([1.0, 2.0]))
        return ctx.all_reduce(SUM, tf.identity(x, name="my_gradient"))

    step = tf.function(lambda bad: strategy_checked.run(replica_fn, args=(bad,)))
    ok = step(tf.constant(-1))
    assert all(v.numpy().tolist() == [4.0, 8.0] for v in ok.values)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"reduced value 0 \(from .*my_gradient.*NaN or Inf"
    ):
        step(tf.constant(2))
    # Without the check, the Inf is reduced and returned, not hidden.
    unchecked = tf.function(lambda bad: strategy.run(replica_fn, args=(bad,)))(tf.constant(2))
    assert all(np.isinf(v.numpy()[1]) for v in unchecked.values)


def test_check_finite_covers_sparse_values(strategy) -> None:
    rows = [np.array([r]) for r in range(NUM_REPLICAS)]
    values = [np.array([[np.nan if r == 1 else 1.0]], np.float32) for r in range(NUM_REPLICAS)]
    value = per_replica_slices(strategy, rows, values, [4, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        SpecCrossDeviceOps(check_finite=True).reduce(SUM, value, destinations=value)


def test_broadcast_and_gather(strategy) -> None:
    tensor = tf.constant([1.0, 2.0, 3.0])
    value = per_replica(strategy, [np.full(2, r, np.float32) for r in range(NUM_REPLICAS)])
    ops = SpecCrossDeviceOps()
    copies = ops.broadcast(tensor, value)
    assert [v.device for v in copies.values] == DEVICES
    assert all(v.numpy().tolist() == [1.0, 2.0, 3.0] for v in copies.values)
    single = ops.broadcast(tensor, DEVICES[2])
    assert [v.device for v in single.values] == [DEVICES[2]]
    gathered = ops._gather(value, value, axis=0)
    assert [v.device for v in gathered.values] == DEVICES
    assert all(v.numpy().tolist() == [0, 0, 1, 1, 2, 2, 3, 3] for v in gathered.values)
    slices = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([3]), tf.constant([5, 2]))
    sparse_copies = ops.broadcast(slices, value)
    assert [v.values.device for v in sparse_copies.values] == DEVICES
    assert strategy.gather(value, axis=0).numpy().tolist() == [0, 0, 1, 1, 2, 2, 3, 3]

    def replica_fn():
        ctx = tf.distribute.get_replica_context()
        return ctx.all_gather(tf.fill([1], tf.cast(ctx.replica_id_in_sync_group, tf.float32)), axis=0)

    assert all(v.numpy().tolist() == [0, 1, 2, 3] for v in strategy.run(replica_fn).values)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(spec=3), TypeError, "spec must be a spec string"),
        (dict(spec="xring:zz"), ValueError, "zz"),
        (dict(spec="nosuchalg"), ValueError, "nosuchalg"),
        (dict(pack_max_bytes=-1), ValueError, "pack_max_bytes must be at least 0"),
        (dict(pack_max_bytes=1.5), TypeError, "pack_max_bytes must be an int"),
        (dict(pack_max_group=0), ValueError, "pack_max_group must be at least 1"),
        (dict(densify_max_elements=True), TypeError, "densify_max_elements must be an int"),
        (dict(check_finite="yes"), TypeError, "check_finite must be a bool"),
        (dict(timeout_s=-1), ValueError, "timeout_s"),
    ],
)
def test_bad_options_are_rejected(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        SpecCrossDeviceOps(**kwargs)


def test_bad_reduce_op_and_device_type_errors(strategy) -> None:
    value = per_replica(strategy, [np.ones(2, np.float32)] * NUM_REPLICAS)
    with pytest.raises(ValueError, match="reduce_op"):
        SpecCrossDeviceOps().batch_reduce_implementation("max", [(value, value)], None)
    with pytest.raises(ValueError, match="nccl"):
        SpecCrossDeviceOps("nccl").reduce(SUM, value, destinations=value)


def test_repr_names_the_options() -> None:
    text = repr(SpecCrossDeviceOps("pscpu:1k:xring#2", pack_max_bytes=4096, check_finite=True))
    assert "pscpu:1k:xring#2" in text and "pack_max_bytes=4096" in text and "check_finite=True" in text
