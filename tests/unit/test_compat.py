"""The seed-compatible names, used the way code written for the seed uses them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import allreduce
from tests.oracle import exact_sum
from tests.strategies import cpu, make_tensor

SHAPES = [(3, 2), (5,), (), (7, 1), (2,)]


def tower_grads(n: int, dtype: tf.DType = tf.float32) -> tuple[list, list[list[np.ndarray]]]:
    rng = np.random.default_rng(n)
    arrays = [[rng.integers(-9, 9, size=s).astype(np.float64) for s in SHAPES] for _ in range(n)]
    towers = [[(make_tensor(a, dtype, cpu(d)), f"var{i}") for i, a in enumerate(arrays[d])] for d in range(n)]
    return towers, arrays


@pytest.mark.parametrize("alg", ["simple", "xring", "pscpu", "better", "rechd", "pscpu/pscpu", "collective"])
@pytest.mark.parametrize("max_bytes", [0, 24, 10_000_000])
def test_sum_gradients_all_reduce_as_the_seed_used_it(alg: str, max_bytes: int) -> None:
    n = 4
    towers, arrays = tower_grads(n)
    reduced, packing = allreduce.sum_gradients_all_reduce(
        "", towers, 1, alg, 1, list(range(n)), agg_small_grads_max_bytes=max_bytes
    )
    assert (packing is None) == (max_bytes == 0)
    restored = allreduce.unpack_small_tensors(reduced, packing)
    for d, tower in enumerate(restored):
        assert [v for _, v in tower] == [f"var{i}" for i in range(len(SHAPES))]
        for i, (g, _) in enumerate(tower):
            assert g.device == cpu(d)
            np.testing.assert_array_equal(g.numpy(), exact_sum([arrays[k][i] for k in range(n)]))
            assert g.numpy().tobytes() == restored[0][i][0].numpy().tobytes()


def test_use_mean_averages() -> None:
    towers, arrays = tower_grads(4, tf.float64)
    reduced, _ = allreduce.sum_gradients_all_reduce([], towers, 1, "xring", 2, [0, 1, 2, 3], use_mean=True)
    np.testing.assert_allclose(reduced[2][0][0].numpy(), exact_sum([a[0] for a in arrays]) / 4, rtol=1e-15)


def test_alg_may_be_a_whole_spec_and_shards_apply_where_they_mean_something() -> None:
    towers, arrays = tower_grads(4)
    for alg, shards in [("pscpu:2:xring#2", 1), ("rechd", 3), ("pscpu", 2)]:
        reduced, _ = allreduce.sum_gradients_all_reduce([], towers, 1, alg, shards, [0, 1, 2, 3])
        np.testing.assert_array_equal(reduced[3][0][0].numpy(), exact_sum([a[0] for a in arrays]))


def test_num_workers_splits_one_task_into_workers_for_hierarchical_algorithms(monkeypatch) -> None:
    seen = []
    import allreduce.compat as compat

    real = compat.batch_all_reduce

    def spy(*args, **kwargs):
        seen.append(kwargs["worker_groups"])
        return real(*args, **kwargs)

    monkeypatch.setattr(compat, "batch_all_reduce", spy)
    towers, arrays = tower_grads(4)
    reduced, _ = allreduce.sum_gradients_all_reduce([], towers, 2, "pscpu/xring", 1, [0, 1, 2, 3])
    assert seen == [[[0, 1], [2, 3]]]
    np.testing.assert_array_equal(reduced[1][1][0].numpy(), exact_sum([a[1] for a in arrays]))
    with pytest.raises(ValueError, match="num_workers=3"):
        allreduce.sum_gradients_all_reduce([], towers, 3, "pscpu/xring", 1, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="num_workers"):
        allreduce.sum_gradients_all_reduce([], towers, 0, "xring", 1, [])
    with pytest.raises(ValueError, match="gpu_indices"):
        allreduce.sum_gradients_all_reduce([], towers, 1, "xring", 1, [0, 0])


def test_sum_grad_and_var_all_reduce() -> None:
    towers, arrays = tower_grads(3)
    grad_and_vars = [tower[0] for tower in towers]
    result = allreduce.sum_grad_and_var_all_reduce(grad_and_vars, 1, "xring", [0, 1, 2], num_shards=2)
    assert [v for _, v in result] == ["var0"] * 3
    for d, (g, _) in enumerate(result):
        assert g.device == cpu(d)
        np.testing.assert_array_equal(g.numpy(), exact_sum([a[0] for a in arrays]))


def test_aggregate_single_gradient() -> None:
    towers, arrays = tower_grads(3)
    (grad, var), flag = allreduce.aggregate_single_gradient([t[1] for t in towers])
    assert var == "var1" and flag is None
    np.testing.assert_array_equal(grad.numpy(), exact_sum([a[1] for a in arrays]))
    (grad, _), flag = allreduce.aggregate_single_gradient(
        [t[1] for t in towers], use_mean=True, check_inf_nan=True
    )
    np.testing.assert_allclose(grad.numpy(), exact_sum([a[1] for a in arrays]) / 3, rtol=1e-6)
    assert bool(flag.numpy()) is False
    nan = [(make_tensor(np.array([np.nan]), tf.float32, cpu(0)), "v")] * 2
    assert bool(allreduce.aggregate_single_gradient(nan, check_inf_nan=True)[1].numpy()) is True
    with pytest.raises(ValueError, match="empty"):
        allreduce.aggregate_single_gradient([])


def test_copy_aggregation_spreads_over_devices() -> None:
    towers, arrays = tower_grads(2)
    grads, flag = allreduce.aggregate_gradients_using_copy_with_device_selection(towers, [cpu(5), cpu(6)])
    assert flag is None
    assert [g.device for g, _ in grads] == [cpu(5), cpu(6), cpu(5), cpu(6), cpu(5)]
    for i, (g, v) in enumerate(grads):
        assert v == f"var{i}"
        np.testing.assert_array_equal(g.numpy(), exact_sum([a[i] for a in arrays]))
    with pytest.raises(ValueError, match="avail_devices"):
        allreduce.aggregate_gradients_using_copy_with_device_selection(towers, [])


def test_split_grads_by_size() -> None:
    towers, _ = tower_grads(2)
    small, large = allreduce.split_grads_by_size(2, towers)
    assert [[v for _, v in tower] for tower in small] == [["var2", "var4"]] * 2
    assert [[v for _, v in tower] for tower in large] == [["var0", "var1", "var3"]] * 2
    small, large = allreduce.split_grads_by_size(100, towers)
    assert large == [] and len(small) == 2
