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
from allreduce.planning.registry import GPU, algorithm_names, get_algorithm
from tests.cases import Case, check_outcome, run_case
from tests.strategies import ALL_TEST_DTYPES, make_tensor, shapes

pytestmark = pytest.mark.gpu

LOGICAL_GPUS = [d.name for d in tf.config.list_logical_devices("GPU")]
PHYSICAL_GPUS = tf.config.list_physical_devices("GPU")


def _gpu_reducing(physical: bool) -> list[str]:
    """The registry's GPU algorithms that reduce, needing physical GPUs or not."""
    return [
        n
        for n in algorithm_names(hierarchical=True)
        if GPU in get_algorithm(n).device_types
        and get_algorithm(n).reduces
        and get_algorithm(n).physical_devices == physical
    ]


# Algorithms that need a physical GPU per input (NCCL) cannot use GPUs split from one.
PHYSICAL_SPECS = _gpu_reducing(physical=True)
GPU_SPECS = [*_gpu_reducing(physical=False), "psgpu/xring", "xring/rechd", "psgpu#2", "torus#2"]
needs_two_physical = pytest.mark.skipif(
    len(PHYSICAL_GPUS) < 2,
    reason=f"{PHYSICAL_SPECS} need 2 or more physical GPUs; {len(PHYSICAL_GPUS)} visible",
)


def full_name(name: str) -> str:
    return tf.DeviceSpec.from_string(name).to_string()


@st.composite
def gpu_cases(draw: st.DrawFn, spec: str, max_devices: int) -> Case:
    info = get_algorithm(spec.split("#")[0])
    shards = int(spec.split("#")[1]) if "#" in spec else 1
    counts = [n for n in range(1, max_devices + 1) if info.problem(LOGICAL_GPUS[:n], shards) is None]
    n = draw(st.sampled_from(counts))
    dtype = draw(st.sampled_from(ALL_TEST_DTYPES))
    return Case(
        spec=spec,
        devices=tuple(full_name(d) for d in LOGICAL_GPUS[:n]),
        shape=draw(shapes),
        dtype=dtype,
        reduction="sum" if dtype.is_integer else draw(st.sampled_from(["sum", "mean"])),
        graph=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@pytest.mark.parametrize("spec", GPU_SPECS)
@given(data=st.data())
def test_gpu_all_reduce_matches_numpy_sum(spec: str, data: st.DataObject) -> None:
    case = data.draw(gpu_cases(spec, len(LOGICAL_GPUS)))
    check_outcome(case, run_case(case))


@needs_two_physical
@pytest.mark.parametrize("spec", PHYSICAL_SPECS)
@given(data=st.data())
def test_physical_gpu_algorithms_match_numpy_sum(spec: str, data: st.DataObject) -> None:
    case = data.draw(gpu_cases(spec, len(PHYSICAL_GPUS)))
    check_outcome(case, run_case(case))


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
