"""Each known defect of the TensorFlow 1 seed, written so that the seed's behaviour fails."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

import allreduce
from tests.strategies import cpu, make_tensor


@pytest.mark.parametrize("spec", ["xring#x", "xring#1.5", "pscpu#", "xring#0", "xring#-1", "pscpu#00"])
def test_bad_shard_counts_raise_value_error(spec: str) -> None:
    # The seed raised TypeError for 'xring#x' and accepted '#0' and '#-1'.
    with pytest.raises(ValueError, match=re.escape(repr(spec))):
        allreduce.parse_all_reduce_spec(spec)


def test_extract_ranges_never_exceeds_the_limit() -> None:
    # The seed returned [[0, 5]] here: limit + 2 indices in one range.
    ranges, singles = allreduce.extract_ranges(list(range(6)), range_size_limit=4)
    assert ranges == [[0, 3], [4, 5]] and singles == []
    assert max(last - first + 1 for first, last in ranges) <= 4


def test_extract_ranges_limit_leaves_a_leftover_single() -> None:
    ranges, singles = allreduce.extract_ranges([0, 1, 2, 7], range_size_limit=2)
    assert ranges == [[0, 1]] and singles == [2, 7]


def _towers(sizes: list[int], dtype: tf.DType = tf.float32, towers: int = 2) -> list[list[tuple]]:
    return [
        [(make_tensor(np.arange(s) + d, dtype, cpu(d)), f"v{i}") for i, s in enumerate(sizes)]
        for d in range(towers)
    ]


def test_a_large_tensor_is_never_packed_with_small_ones() -> None:
    # 4-byte floats: 8 elements = 32 bytes is small at max_bytes=32, 100 elements is not.
    # The seed's running total packed the large tensor together with its neighbours.
    towers = _towers([8, 8, 100, 8])
    packed, packing = allreduce.pack_small_tensors(towers, max_bytes=32)
    assert len(packing) == 2  # one pack per tower
    assert [list(gpt.indices) for gpt in packing.values()] == [[0, 1], [0, 1]]
    assert [g.shape.num_elements() for g, _ in packed[0]] == [16, 100, 8]


def test_no_pack_exceeds_max_bytes_in_members() -> None:
    towers = _towers([3, 3, 3, 9, 3])
    _, packing = allreduce.pack_small_tensors(towers, max_bytes=12)
    for gpt in packing.values():
        assert all(s.num_elements() * 4 <= 12 for s in gpt.shapes)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float64, tf.int32, tf.int64])
def test_packing_works_for_dtypes_other_than_float32(dtype: tf.DType) -> None:
    # The seed asserted float32.
    towers = _towers([2, 3, 4], dtype)
    packed, packing = allreduce.pack_small_tensors(towers, max_bytes=64)
    assert packed[0][0][0].dtype == dtype and len(packed[0]) == 1
    restored = allreduce.unpack_small_tensors(packed, packing)
    for tower, original in zip(restored, towers):
        for (g, _), (g0, _) in zip(tower, original):
            assert g.numpy().tobytes() == g0.numpy().tobytes()


def test_packs_never_mix_dtypes() -> None:
    towers = [
        [
            (make_tensor(np.ones(2), dt, cpu(d)), i)
            for i, dt in enumerate([tf.float32, tf.float32, tf.float64])
        ]
        for d in range(2)
    ]
    packed, packing = allreduce.pack_small_tensors(towers, max_bytes=64)
    assert [list(gpt.indices) for gpt in packing.values()] == [[0, 1], [0, 1]]
    assert [g.dtype for g, _ in packed[0]] == [tf.float32, tf.float64]


def test_better_sums_like_every_other_algorithm() -> None:
    # The seed's 'better' averaged.
    tower_grads = [[(make_tensor(np.full([3], d + 1.0), tf.float32, cpu(d)), "v")] for d in range(4)]
    reduced, _ = allreduce.sum_gradients_all_reduce([], tower_grads, 1, "better", 1, [0, 1, 2, 3])
    for tower in reduced:
        np.testing.assert_array_equal(tower[0][0].numpy(), np.full([3], 10.0))


def test_copy_aggregation_returns_the_nan_flag() -> None:
    # The seed computed the flag and dropped it.
    bad = [[(make_tensor(np.array([1.0, np.inf]), tf.float32, cpu(d)), "v")] for d in range(2)]
    good = [[(make_tensor(np.array([1.0, 2.0]), tf.float32, cpu(d)), "v")] for d in range(2)]
    grads, flag = allreduce.aggregate_gradients_using_copy_with_device_selection(
        bad, [cpu(0)], check_inf_nan=True
    )
    assert bool(flag.numpy()) is True
    assert grads[0][1] == "v"
    _, flag = allreduce.aggregate_gradients_using_copy_with_device_selection(
        good, [cpu(0)], check_inf_nan=True
    )
    assert bool(flag.numpy()) is False
    _, flag = allreduce.aggregate_gradients_using_copy_with_device_selection(good, [cpu(0)])
    assert flag is None
