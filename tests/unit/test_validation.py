"""Misuse is a clear error at once: one validation module, one error style everywhere.

A value of the wrong type is a ``TypeError`` and a value of the right type that is not
allowed a ``ValueError``; either names the value, is raised while the graph is built
(before any op runs), and leaves the caller's inputs as they were.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import allreduce
from allreduce.planning.spec import check_spec
from tests.strategies import cpu, make_tensor


def tensors(n: int = 4, length: int = 6) -> list[tf.Tensor]:
    return [make_tensor(np.arange(length) + i, tf.float32, cpu(i)) for i in range(n)]


# --- batch_all_reduce takes towers, not a flat list ----------------------------------------


def test_flat_list_to_batch_all_reduce_is_a_type_error_saying_towers_are_expected() -> None:
    with pytest.raises(TypeError) as info:
        allreduce.batch_all_reduce(tensors(), "xring")
    message = str(info.value)
    assert "list of towers" in message and "tower_tensors[0] is a EagerTensor" in message
    assert "all_reduce" in message


def test_towers_of_the_wrong_kind_are_type_errors() -> None:
    with pytest.raises(TypeError, match=r"tower_tensors\[1\]\[0\] must be a dense tf.Tensor"):
        allreduce.batch_all_reduce([[tensors(1)[0]], [np.ones(6)]])


# --- SpecCrossDeviceOps refuses a spec that does not reduce ---------------------------------


@pytest.mark.parametrize("spec", ["trivial", "xring:1k:trivial", "trivial:8:pscpu"])
def test_cross_device_ops_refuses_a_spec_that_does_not_reduce(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        allreduce.SpecCrossDeviceOps(spec)
    assert repr(spec) in str(info.value) and "'trivial'" in str(info.value)


# --- devices that do not exist ---------------------------------------------------------------

MISSING = [
    "/job:localhost/replica:0/task:0/device:CPU:9",
    "/job:localhost/replica:0/task:0/device:GPU:0",
    "/device:GPU:1",
    "/job:nowhere/replica:0/task:0/device:CPU:0",
    "/job:localhost/replica:0/task:3/device:CPU:0",
]


@pytest.mark.parametrize("missing", MISSING)
def test_a_device_that_does_not_exist_is_named_eagerly(missing: str) -> None:
    inputs = tensors(2)
    with pytest.raises(ValueError) as info:
        allreduce.all_reduce(inputs, "xring", devices=[cpu(0), missing])
    assert repr(missing) in str(info.value) and "does not exist" in str(info.value)


@pytest.mark.parametrize("missing", MISSING[:2])
def test_a_device_that_does_not_exist_is_named_while_tracing(missing: str) -> None:
    inputs = tensors(2)
    function = tf.function(
        lambda a, b: allreduce.batch_all_reduce([[a], [b]], "pscpu", devices=[cpu(0), missing]),
        autograph=False,
    )
    with pytest.raises(ValueError, match="does not exist"):
        function.get_concrete_function(*inputs)


@pytest.mark.parametrize("name", [cpu(7), "/device:CPU:7", "/cpu:3", "/job:localhost/device:CPU:1"])
def test_existing_devices_in_any_spelling_are_accepted(name: str) -> None:
    inputs = tensors(2)
    with tf.device(name):
        inputs[1] = tf.identity(inputs[1])
    out = allreduce.all_reduce(inputs, "xring", devices=[cpu(0), name])
    assert np.all(out[0].numpy() == np.arange(6) * 2 + 1)


def test_tensorflow1_graphs_are_left_alone_for_sessions_to_place() -> None:
    gpus = ["/device:GPU:0", "/device:GPU:1"]
    with tf.Graph().as_default():
        values = []
        for i, device in enumerate(gpus):
            with tf.device(device):
                values.append(tf.constant([1.0, 2.0]) * (i + 1))
        out = allreduce.all_reduce(values, "xring", devices=gpus)
        assert [o.device for o in out] == gpus
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        with tf.compat.v1.Session(config=config) as session:
            results = session.run(out)
    assert all(np.array_equal(r, [3.0, 6.0]) for r in results)


# --- other tensor kinds ----------------------------------------------------------------------


def sparse(i: int) -> tf.SparseTensor:
    with tf.device(cpu(i)):
        return tf.sparse.from_dense(tf.constant([0.0, 1.0, 0.0]))


def ragged(i: int) -> tf.RaggedTensor:
    with tf.device(cpu(i)):
        return tf.ragged.constant([[1.0], [2.0, 3.0]])


@pytest.mark.parametrize(
    ("make", "kind", "hint"),
    [
        (sparse, "SparseTensor", "tf.sparse.to_dense"),
        (ragged, "RaggedTensor", ".to_tensor()"),
        (lambda i: np.ones(3, np.float32), "ndarray", "tf.device(d)"),
        (lambda i: [1.0, 2.0], "list", "tf.device(d)"),
    ],
)
def test_other_tensor_kinds_are_type_errors_saying_what_is_accepted(make, kind: str, hint: str) -> None:
    with pytest.raises(TypeError) as info:
        allreduce.all_reduce([make(0), make(1)], "xring")
    message = str(info.value)
    assert "tensors[0] must be a dense tf.Tensor (or tf.Variable)" in message
    assert kind in message and hint in message
    with pytest.raises(TypeError, match=r"dense tf\.Tensor"):
        allreduce.batch_all_reduce([[make(0)], [make(1)]], "xring")


def test_variables_are_read_on_their_devices() -> None:
    variables = []
    for i in range(3):
        with tf.device(cpu(i)):
            variables.append(tf.Variable(tf.fill([4], float(i + 1))))
    out = allreduce.all_reduce(variables, "rechd")
    for i, o in enumerate(out):
        assert o.device == cpu(i) and np.all(o.numpy() == 6.0)
    assert all(np.all(v.numpy() == i + 1) for i, v in enumerate(variables))


# --- one error style ---------------------------------------------------------------------------

INT_OPTIONS = [
    (lambda v: allreduce.batch_all_reduce([[t] for t in tensors(2)], pack_max_bytes=v), "pack_max_bytes", 0),
    (lambda v: allreduce.batch_all_reduce([[t] for t in tensors(2)], pack_max_group=v), "pack_max_group", 1),
    (lambda v: allreduce.SpecCrossDeviceOps(pack_max_bytes=v), "pack_max_bytes", 0),
    (lambda v: allreduce.SpecCrossDeviceOps(pack_max_group=v), "pack_max_group", 1),
    (lambda v: allreduce.SpecCrossDeviceOps(densify_max_elements=v), "densify_max_elements", 0),
    (lambda v: allreduce.extract_ranges([1, 2], v), "range_size_limit", 1),
    (lambda v: allreduce.group_device_names([cpu(0), cpu(1)], v), "group_size", 1),
    (lambda v: allreduce.build_all_reduce_device_prefixes("worker", v), "num_tasks", 1),
    (lambda v: allreduce.logical_devices(v), "count", 1),
    (
        lambda v: allreduce.sum_gradients_all_reduce(
            [], [[(t, "v")] for t in tensors(2)], v, "xring", 1, [0, 1]
        ),
        "num_workers",
        1,
    ),
]


@pytest.mark.parametrize(("call", "name", "low"), INT_OPTIONS)
@pytest.mark.parametrize("wrong", [True, 2.0, "2", None])
def test_an_int_option_of_the_wrong_type_is_a_type_error(call, name: str, low: int, wrong: object) -> None:
    with pytest.raises(TypeError) as info:
        call(wrong)
    assert f"{name} must be an int, got {type(wrong).__name__}: {wrong!r}" in str(info.value)


@pytest.mark.parametrize(("call", "name", "low"), INT_OPTIONS)
def test_an_int_option_out_of_range_is_a_value_error(call, name: str, low: int) -> None:
    with pytest.raises(ValueError) as info:
        call(low - 1)
    assert f"{name} must be at least {low}, got {low - 1}" in str(info.value)


TIMEOUTS = [
    lambda v: allreduce.all_reduce(tensors(2), "collective", timeout_s=v),
    lambda v: allreduce.batch_all_reduce([[t] for t in tensors(2)], timeout_s=v),
    lambda v: allreduce.SpecCrossDeviceOps(timeout_s=v),
]


@pytest.mark.parametrize("call", TIMEOUTS)
@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf")])
def test_timeouts_out_of_range_are_value_errors_everywhere(call, bad: float) -> None:
    with pytest.raises(ValueError, match="timeout_s must be a non-negative finite number of seconds"):
        call(bad)


@pytest.mark.parametrize("call", TIMEOUTS)
@pytest.mark.parametrize("bad", ["5", True, None])
def test_timeouts_of_the_wrong_type_are_type_errors_everywhere(call, bad: object) -> None:
    with pytest.raises(TypeError, match=f"timeout_s must be a number of seconds, got {type(bad).__name__}"):
        call(bad)


def test_check_finite_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="check_finite must be a bool, got int: 1"):
        allreduce.SpecCrossDeviceOps(check_finite=1)


@pytest.mark.parametrize(("value", "error"), [(3, TypeError), ("max", ValueError), ("SUM", ValueError)])
def test_reduction_names_are_checked_in_one_style(value: object, error: type) -> None:
    with pytest.raises(error, match="reduction must be"):
        allreduce.all_reduce(tensors(2), reduction=value)


def test_spec_tuples_are_checked_without_formatting_them() -> None:
    with pytest.raises(TypeError, match="the shards of spec tuple"):
        allreduce.all_reduce(tensors(2), [("xring", "2", -1)])
    with pytest.raises(ValueError, match="limits must increase"):
        allreduce.all_reduce(tensors(2), [("xring", 1, 8), ("pscpu", 1, 8), ("xring", 1, -1)])
    assert check_spec([("xring", 2, -1)]) == allreduce.parse_all_reduce_spec("xring#2")


# --- bool values: the behaviour the docs describe ---------------------------------------------


def test_bool_tensors_are_refused_by_all_reduce_with_the_supported_dtypes() -> None:
    inputs = [make_tensor(np.array([True, False]), tf.bool, cpu(i)) for i in range(2)]
    with pytest.raises(ValueError, match="dtype bool cannot be all-reduced; supported: float16"):
        allreduce.all_reduce(inputs)


def test_bool_values_are_refused_by_the_training_adapter_when_the_step_is_built() -> None:
    devices = [cpu(0), cpu(1)]
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=allreduce.SpecCrossDeviceOps())
    value = strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant([True, False]))
    with pytest.raises(TypeError, match="cannot reduce bool values"):
        strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM, [(value, value)])


def test_nothing_the_caller_passed_is_modified_by_a_rejected_call() -> None:
    inputs = tensors(3)
    devices = [cpu(0), cpu(1), cpu(9)]
    towers = [[t] for t in inputs]
    before = ([t.numpy().tobytes() for t in inputs], list(devices), [list(t) for t in towers])
    with pytest.raises(ValueError):
        allreduce.batch_all_reduce(towers, "xring", devices=devices)
    assert ([t.numpy().tobytes() for t in inputs], devices, [list(t) for t in towers]) == before


def test_devices_that_contradict_where_eager_tensors_are_name_the_first_mismatch() -> None:
    inputs = tensors(4)
    devices = [cpu(i) for i in range(4)]
    first = r"devices\[0\] is '.*CPU:3', but tensor 0 of tower 0 is on '.*CPU:0'"
    with pytest.raises(ValueError, match=first):
        allreduce.all_reduce(inputs, "xring", devices=list(reversed(devices)))
    towers = [[t, t * 2] for t in inputs]
    second = r"devices\[1\] is '.*CPU:0', but tensor 0 of tower 1 is on '.*CPU:1'"
    with pytest.raises(ValueError, match=second):
        allreduce.batch_all_reduce(towers, "pscpu", devices=[cpu(0), cpu(0), cpu(2), cpu(3)])
    out = allreduce.all_reduce(inputs, "xring", devices=[f"/cpu:{i}" for i in range(4)])
    for d, result in enumerate(out):
        assert result.device == cpu(d)
        assert np.all(result.numpy() == np.arange(6) * 4 + 6)
