"""The algorithm checks on GPUs: every GPU-capable spec against the numpy oracle.

A single physical GPU is split into logical GPUs by the root conftest; NCCL needs
distinct physical GPUs, so its tests need at least two.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import allreduce
from allreduce.registry import GPU, algorithm_names, get_algorithm
from tests.properties.test_algorithm_properties import check_outputs, run_case
from tests.strategies import ALL_TEST_DTYPES, make_tensor, shapes

pytestmark = pytest.mark.gpu

LOGICAL_GPUS = [d.name for d in tf.config.list_logical_devices("GPU")]
PHYSICAL_GPUS = tf.config.list_physical_devices("GPU")
NCCL_SPECS = ["nccl", "nccl/xring", "nccl/rechd", "nccl/pscpu"]
GPU_SPECS = [
    n
    for n in algorithm_names()
    if GPU in get_algorithm(n).device_types and get_algorithm(n).reduces and n != "nccl"
] + ["pscpu/pscpu", "psgpu/xring", "xring/rechd", "psgpu#2"]
needs_two_physical = pytest.mark.skipif(
    len(PHYSICAL_GPUS) < 2, reason=f"NCCL needs 2 or more physical GPUs; {len(PHYSICAL_GPUS)} visible"
)


def full_name(name: str) -> str:
    return tf.DeviceSpec.from_string(name).to_string()


@st.composite
def gpu_cases(draw: st.DrawFn, spec: str, max_devices: int, min_devices: int = 1) -> dict:
    n = draw(st.integers(min_devices, max_devices))
    dtype = draw(st.sampled_from(ALL_TEST_DTYPES))
    return dict(
        spec=spec,
        n=n,
        devices=[full_name(d) for d in LOGICAL_GPUS[:n]],
        shape=draw(shapes),
        dtype=dtype,
        reduction="sum" if dtype.is_integer else draw(st.sampled_from(["sum", "mean"])),
        graph=draw(st.booleans()),
        groups=None,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@pytest.mark.parametrize("spec", GPU_SPECS)
@given(data=st.data())
def test_gpu_all_reduce_matches_numpy_sum(spec: str, data: st.DataObject) -> None:
    case = data.draw(gpu_cases(spec, len(LOGICAL_GPUS), min_devices=2 if spec.endswith("#2") else 1))
    check_outputs(case, *run_case(case))


@needs_two_physical
@pytest.mark.parametrize("spec", NCCL_SPECS)
@given(data=st.data())
def test_nccl_matches_numpy_sum(spec: str, data: st.DataObject) -> None:
    case = data.draw(gpu_cases(spec, len(PHYSICAL_GPUS)))
    check_outputs(case, *run_case(case))


def test_nccl_on_a_cpu_input_names_the_device() -> None:
    with tf.device("/device:CPU:0"):
        x = tf.ones([3])
    with tf.device(LOGICAL_GPUS[0]):
        y = tf.ones([3])
    with pytest.raises(ValueError, match="CPU:0"):
        allreduce.all_reduce([y, x], "nccl")


def test_large_tensor_on_gpus() -> None:
    n = min(4, len(LOGICAL_GPUS))
    tensors = [make_tensor(np.full([1 << 20], d + 1.0), tf.float32, LOGICAL_GPUS[d]) for d in range(n)]
    for spec in ["xring#2", "rechd", "psgpu", "collective"]:
        out = allreduce.all_reduce(tensors, spec)
        for o in out:
            assert np.all(o.numpy() == n * (n + 1) / 2)
