"""allreduce.tune and spec="auto" in this process: arguments, resolution, a real short tuning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

import allreduce
from allreduce.selection import auto
from allreduce.tuning.tuner import tune_entry
from tests.oracle import exact_sum
from tests.strategies import cpu
from tests.unit.test_tuning_search import MACHINE, FakeMachine

DEVICES = [cpu(i) for i in range(4)]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test tunes into, and resolves from, its own empty cache folder."""
    monkeypatch.setenv("ALLREDUCE_CACHE_DIR", str(tmp_path / "cache"))
    auto.forget()
    yield
    auto.forget()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"devices": []}, ValueError, "devices is empty"),
        ({"devices": "CPU:0"}, TypeError, "devices"),
        ({"devices": ["nonsense:name:x"]}, ValueError, "device name"),
        ({"sizes": []}, ValueError, "sizes is empty"),
        ({"sizes": [4, 0]}, ValueError, r"sizes\[1\] must be at least 1"),
        ({"sizes": [4, 1.5]}, TypeError, r"sizes\[1\] must be an int"),
        ({"sizes": 100}, TypeError, "sizes"),
        ({"budget_s": 0}, ValueError, "budget_s"),
        ({"budget_s": "60"}, TypeError, "budget_s"),
        ({"budget_s": float("inf")}, ValueError, "budget_s"),
        ({"dtype": 3}, TypeError, "dtype"),
        ({"dtype": "complex64"}, ValueError, "complex64"),
        ({"dtype": tf.bool}, ValueError, "bool"),
        ({"specs": ["xring:1k:simple"]}, ValueError, "without size ranges"),
        ({"specs": []}, ValueError, "specs is empty"),
        ({"specs": ["nosuch"]}, ValueError, "nosuch"),
        ({"specs": "xring"}, TypeError, "specs"),
    ],
)
def test_bad_arguments_are_refused_at_once(kwargs, error, match):
    args = {"devices": DEVICES, "sizes": [10, 1000], **kwargs}
    with pytest.raises(error, match=match):
        allreduce.tune(args.pop("devices"), args.pop("sizes"), **args)


def test_no_candidate_that_runs_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no spec"):
        tune_entry(DEVICES, [10], cache_dir=tmp_path, measure=FakeMachine(MACHINE), specs=["nccl"])


def values_on(devices, length=1000):
    arrays = [np.arange(length, dtype=np.float32) * (d + 1) for d in range(len(devices))]
    tensors = []
    for array, device in zip(arrays, devices):
        with tf.device(device):
            tensors.append(tf.identity(tf.constant(array)))
    return tensors, arrays


def check_sums(results, arrays):
    want = exact_sum(arrays).astype(np.float32)
    for r in results:
        np.testing.assert_array_equal(r.numpy(), want)


def test_auto_without_a_tuning_is_the_models_choice_and_says_so(caplog):
    tensors, arrays = values_on(DEVICES)
    with caplog.at_level(logging.INFO, logger="allreduce.selection.auto"):
        check_sums(allreduce.all_reduce(tensors, "auto"), arrays)
        check_sums(allreduce.all_reduce(tensors, "auto"), arrays)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1  # one line per distinct resolution
    assert "cost model's choice" in lines[0] and "4 devices" in lines[0]
    spec, _ = auto.resolve_with_reason(DEVICES, [1000], "float32")
    allreduce.parse_all_reduce_spec(spec)


def test_auto_uses_the_tuning_cached_for_these_devices_and_the_nearest_workload(caplog):
    tune_entry(DEVICES, [1000], measure=FakeMachine(MACHINE), specs=["rechd"])
    tensors, arrays = values_on(DEVICES)
    with caplog.at_level(logging.INFO, logger="allreduce.selection.auto"):
        check_sums(allreduce.all_reduce(tensors, "auto"), arrays)
        towers = [[t, t] for t in tensors]
        for tower in allreduce.batch_all_reduce(towers, "auto"):
            check_sums(tower, arrays)
    text = caplog.text
    assert "'rechd', tuned for this workload" in text
    assert "'rechd', tuned on these devices for the nearest workload" in text
    assert auto.resolve(DEVICES, [1000], "float64").startswith(
        ("pscpu", "simple", "better", "xring", "rechd")
    )


def test_auto_inside_a_tf_function_and_with_explicit_devices():
    tensors, arrays = values_on(DEVICES[:2])

    @tf.function
    def step(a, b):
        return allreduce.all_reduce([a, b], "auto", devices=DEVICES[:2])

    check_sums(step(*tensors), arrays)


def test_spec_cross_device_ops_and_the_compat_functions_take_auto():
    ops = allreduce.SpecCrossDeviceOps("auto")
    assert ops.spec == "auto"
    strategy = tf.distribute.MirroredStrategy(DEVICES[:2], cross_device_ops=ops)
    value = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.identity(tf.fill([5], float(ctx.replica_id_in_sync_group + 1)))
    )
    reduced = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
    np.testing.assert_array_equal(np.asarray(reduced), np.full(5, 3.0))
    towers = []
    for d, device in enumerate(DEVICES[:2]):
        with tf.device(device):
            towers.append([(tf.identity(tf.fill([3], float(d + 1))), "v")])
    new, _ = allreduce.sum_gradients_all_reduce("", towers, 1, "auto", 1, [0, 1])
    for tower in new:
        np.testing.assert_array_equal(tower[0][0].numpy(), np.full(3, 3.0))


def test_a_real_tuning_on_two_logical_cpus_within_a_tiny_budget(tmp_path):
    entry = tune_entry(
        DEVICES[:2], [8, 3000, 70_000], cache_dir=tmp_path, budget_s=3.0, specs=["simple", "xring", "pscpu"]
    )
    assert not entry["cached"]
    assert entry["cells"] >= 2 and entry["samples"]
    for sample in entry["samples"]:
        assert sample["spec"] in ("simple", "xring", "pscpu") and all(s > 0 for s in sample["seconds"])
    tensors, arrays = values_on(DEVICES[:2], 3000)
    check_sums(allreduce.all_reduce(tensors, entry["spec"]), arrays)
    assert allreduce.tune(DEVICES[:2], [8, 3000, 70_000], cache_dir=tmp_path) == entry["spec"]


def test_the_measurer_reports_a_spec_that_cannot_run_as_none(caplog):
    from allreduce.tuning.measure import Measurer, logically_split

    assert logically_split(DEVICES) and not logically_split(
        ["/job:worker/task:0/device:CPU:0", "/job:worker/task:1/device:CPU:0"]
    )
    with caplog.at_level(logging.WARNING):
        found = Measurer(DEVICES[:2], "float32", warmup=0, iters=2)([10, 20], ["simple", "nccl"])
    assert found["nccl"] is None and len(found["simple"]) == 2
    assert "tuning leaves out nccl" in caplog.text
