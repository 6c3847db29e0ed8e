"""Differential tests against TensorFlow's own (private, test-only) v1 builders.

``tensorflow.python.distribute.v1.all_reduce`` implements ring, recursive
halving-doubling and shuffle all-reduce; where its preconditions hold, our results
must agree with its results (exactly for integers, within the rounding bound for floats).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import allreduce
from tests.oracle import to_float64, tolerance
from tests.strategies import cpu, make_tensor, random_values

tf_all_reduce = pytest.importorskip("tensorflow.python.distribute.v1.all_reduce")


def inputs(n: int, length: int, dtype: tf.DType, seed: int) -> list[tf.Tensor]:
    rng = np.random.default_rng(seed)
    return [make_tensor(random_values(rng, (length,), dtype), dtype, cpu(i)) for i in range(n)]


def theirs(kind: str, tensors: list[tf.Tensor], shards: int) -> list[tf.Tensor]:
    if kind == "xring":
        return tf_all_reduce.build_ring_all_reduce(tensors, 1, shards, list(range(len(tensors))), tf.add)
    if kind == "rechd":
        return tf_all_reduce.build_recursive_hd_all_reduce(tensors, tf.add)
    gather = [cpu(i) for i in range(shards)]
    return tf_all_reduce.build_shuffle_all_reduce(tensors, gather, tf.add_n)


@given(
    kind=st.sampled_from(["xring", "rechd", "pscpu"]),
    log_n=st.integers(1, 3),
    chunks=st.integers(1, 6),
    shards=st.integers(1, 2),
    dtype=st.sampled_from([tf.int32, tf.float32, tf.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_agrees_with_tensorflows_builder(kind, log_n, chunks, shards, dtype, seed) -> None:
    n = 2**log_n  # TensorFlow's halving-doubling needs a power of two ...
    length = n * shards * chunks  # ... and a divisible size.
    if kind == "rechd":
        shards = 1
    tensors = inputs(n, length, dtype, seed)
    ours = allreduce.all_reduce(tensors, kind if shards == 1 else f"{kind}#{shards}")
    reference = theirs(kind, tensors, shards)
    values = [to_float64(t) for t in tensors]
    # Each result is within the bound of the exact sum, so two results are within twice it.
    bound = 2 * tolerance(values, dtype, mean=False)
    for a, b in zip(ours, reference):
        assert np.all(np.abs(to_float64(a) - to_float64(b)) <= bound)


def test_our_halving_doubling_covers_what_tensorflows_cannot() -> None:
    tensors = inputs(3, 7, tf.int32, 0)
    with pytest.raises((ValueError, AssertionError, tf.errors.InvalidArgumentError)):
        tf_all_reduce.build_recursive_hd_all_reduce(tensors, tf.add)
    expected = sum(t.numpy() for t in tensors)
    for out in allreduce.all_reduce(tensors, "rechd"):
        np.testing.assert_array_equal(out.numpy(), expected)
