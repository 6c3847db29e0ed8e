"""Bad input raises a clear ValueError/TypeError at build time and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import allreduce
from tests.strategies import cpu, make_tensor


def tensors(n: int = 3, shape: tuple = (4,), dtype: tf.DType = tf.float32) -> list[tf.Tensor]:
    return [make_tensor(np.arange(np.prod(shape)).reshape(shape) + i, dtype, cpu(i)) for i in range(n)]


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "fragment"),
    [
        (lambda: [], {}, ValueError, "empty"),
        (lambda: "abc", {}, TypeError, "list of tensors"),
        (
            lambda: [np.ones(3)],
            {},
            TypeError,
            "tensors[0] must be a dense tf.Tensor (or tf.Variable), got ndarray",
        ),
        (lambda: [*tensors(2), *tensors(1, (5,))], {}, ValueError, "tensors[2] has shape (5,)"),
        (
            lambda: [*tensors(2), *tensors(1, dtype=tf.float64)],
            {},
            ValueError,
            "tensors[2] has dtype float64",
        ),
        (lambda: tensors(), {"spec": "ring"}, ValueError, "invalid algorithm 'ring'"),
        (lambda: tensors(), {"spec": 3}, TypeError, "str"),
        (lambda: tensors(), {"spec": "pscpu#4"}, ValueError, "pscpu#4 needs 4 distinct CPU gather devices"),
        (lambda: tensors(), {"spec": "nccl"}, ValueError, "runs on GPU devices only"),
        (lambda: tensors(), {"spec": "psgpu"}, ValueError, "'/job:localhost/replica:0/task:0/device:CPU:0'"),
        (lambda: tensors(), {"spec": "nccl/xring"}, ValueError, "try 'xring'"),
        (lambda: tensors(), {"reduction": "max"}, ValueError, "'max'"),
        (lambda: tensors(dtype=tf.int32), {"reduction": "mean"}, ValueError, "int32"),
        (lambda: tensors(dtype=tf.bool), {}, ValueError, "dtype bool cannot be all-reduced"),
        (lambda: tensors(dtype=tf.complex64), {}, ValueError, "complex64"),
        (lambda: tensors(), {"devices": [cpu(0)]}, ValueError, "one device per tensor"),
        (lambda: tensors(), {"devices": ["/gpu:x"]}, ValueError, "'/gpu:x'"),
        (
            lambda: tensors(),
            {"spec": "xring/xring", "worker_groups": [[0], [1]]},
            ValueError,
            "worker_groups",
        ),
        (lambda: tensors(), {"spec": "xring/xring", "worker_groups": [[0, 1], [1, 2]]}, ValueError, "0..2"),
    ],
)
def test_all_reduce_rejects(make, kwargs: dict, error: type, fragment: str) -> None:
    with pytest.raises(error) as info:
        allreduce.all_reduce(make(), **kwargs)
    assert fragment in str(info.value)


def test_errors_are_raised_while_tracing() -> None:
    inputs = tensors()

    @tf.function(autograph=False)
    def step(*xs):
        return allreduce.all_reduce(list(xs), "pscpu#5", devices=[cpu(i) for i in range(3)])

    with pytest.raises(ValueError, match="pscpu#5"):
        step.get_concrete_function(*inputs)


def test_traced_arguments_need_devices() -> None:
    inputs = tensors()
    step = tf.function(lambda *xs: allreduce.all_reduce(list(xs)), autograph=False)
    with pytest.raises(ValueError, match="pass devices="):
        step(*inputs)


def test_unknown_static_shape_is_rejected() -> None:
    step = tf.function(
        lambda x: allreduce.all_reduce([x], devices=[cpu(0)]),
        input_signature=[tf.TensorSpec([None], tf.float32)],
    )
    with pytest.raises(ValueError, match="not fully defined"):
        step.get_concrete_function()


def test_collective_needs_distinct_devices() -> None:
    inputs = [make_tensor(np.ones(3), tf.float32, cpu(0)) for _ in range(2)]
    with pytest.raises(ValueError, match="different device"):
        allreduce.all_reduce(inputs, "collective")
    # Algorithms built from copies accept two inputs on one device.
    out = allreduce.all_reduce(inputs, "xring")
    np.testing.assert_array_equal(out[1].numpy(), np.full([3], 2.0))


@pytest.mark.parametrize(
    ("towers", "fragment"),
    [
        ([], "empty"),
        ([[], [1]], "tower_tensors[1] has 1 tensors but tower_tensors[0] has 0"),
        ("x", "list"),
    ],
)
def test_batch_all_reduce_rejects_bad_towers(towers, fragment: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        allreduce.batch_all_reduce(towers)
    assert fragment in str(info.value)


def test_batch_all_reduce_rejects_mismatched_towers() -> None:
    a, b = tensors(2)
    c = make_tensor(np.ones([2, 2]), tf.float32, cpu(1))
    with pytest.raises(ValueError, match=r"tower_tensors\[1\]\[1\] is float32\(2, 2\)"):
        allreduce.batch_all_reduce([[a, a], [b, c]])
    with pytest.raises(ValueError, match="pack_max_group"):
        allreduce.batch_all_reduce([[a], [b]], pack_max_bytes=64, pack_max_group=0)
    with pytest.raises(ValueError, match="max_bytes"):
        allreduce.batch_all_reduce([[a], [b]], pack_max_bytes=-1)


def test_batch_all_reduce_of_no_tensors() -> None:
    assert allreduce.batch_all_reduce([[], []]) == [[], []]


def test_packing_rejects_disagreeing_towers() -> None:
    a, b = tensors(2)
    with pytest.raises(ValueError, match="dtype"):
        allreduce.pack_small_tensors([[(a, "v")], [(tf.cast(b, tf.float64), "v")]], max_bytes=64)
    with pytest.raises(ValueError, match="no gradient"):
        allreduce.pack_small_tensors([[(a, "v")], [(None, "v")]], max_bytes=64)
    with pytest.raises(TypeError, match="pair"):
        allreduce.pack_small_tensors([[a], [b]], max_bytes=64)


def test_failed_calls_leave_inputs_alone() -> None:
    inputs = tensors()
    before = [t.numpy().tobytes() for t in inputs]
    towers = [[t] for t in inputs]
    for call in (
        lambda: allreduce.all_reduce(inputs, "pscpu#9"),
        lambda: allreduce.batch_all_reduce(towers, "nccl"),
        lambda: allreduce.sum_gradients_all_reduce([], [[(t, "v")] for t in inputs], 1, "xring#x", 1, []),
    ):
        with pytest.raises(ValueError):
            call()
    assert [t.numpy().tobytes() for t in inputs] == before
    assert towers == [[t] for t in inputs]
