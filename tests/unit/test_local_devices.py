"""logical_devices: names of the logical devices the root conftest made."""

from __future__ import annotations

import pytest

import allreduce
from tests.strategies import cpu


def test_existing_split_is_kept_and_named_in_full() -> None:
    assert allreduce.logical_devices(3) == [cpu(0), cpu(1), cpu(2)]
    assert len(allreduce.logical_devices(8)) == 8


def test_too_many_after_start_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="9 logical CPU devices wanted, TensorFlow has 8"):
        allreduce.logical_devices(9)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0,), ValueError),
        ((True,), TypeError),
        ((2, "TPU"), ValueError),
        ((2, 3), TypeError),
        ((2.0,), TypeError),
    ],
)
def test_bad_arguments(args: tuple, error: type) -> None:
    with pytest.raises(error):
        allreduce.logical_devices(*args)


def test_no_gpu_is_a_runtime_error() -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="no GPU"):
        allreduce.logical_devices(2, "GPU")
