"""Compressed all-reduces against the float64 oracle and :func:`allreduce.error_bound`.

Every hop compresses (``CastWire(name, everywhere=True)``: logical CPUs of one process
would otherwise send values as they are). For any spec, device count, grouping, dtype,
reduction and inputs (random at any scale, or built to round badly), every output on
every device is within the stated bound of the exact sum, keeps its input's dtype, and
is bitwise identical to the others. The bound is also tight: on inputs that round
badly, some output errs by at least a tenth of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import allreduce
from allreduce.graph.compression import CastWire
from allreduce.planning.registry import CPU, algorithm_names, get_algorithm
from allreduce.planning.wire_formats import WIRE_FORMATS
from tests.cases import partition
from tests.oracle import exact_sum, to_float64
from tests.strategies import cpu, make_tensor

CPU_REDUCING = [
    n for n in algorithm_names() if CPU in get_algorithm(n).device_types and get_algorithm(n).reduces
]
COMPOSABLE = [n for n in CPU_REDUCING if get_algorithm(n).composable]
#: Algorithms whose hops go through the wire (not summed inside a kernel of their own).
COMPRESSING = [n for n in CPU_REDUCING if get_algorithm(n).roundings(2, 1).wire > 0]
LENGTH = 256


def adversarial(n: int, compression: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of values that round badly on the wire, ``LENGTH`` columns, in blocks:

    * one device holds ``1 + u`` (a tie that rounds down to 1), the others ``u``: every
      partial sum that holds the large value is a tie again and loses ``u`` each time
      it is rounded (the large value's device cycles, so that it starts every path);
    * every device holds ``1 + u``;
    * every device holds a random tie ``1 + (2m + 1) u``;
    * one device holds ``1 + 3u`` (a tie rounding up), the others ``u``;

    each column scaled by a random power of two.
    """
    u = WIRE_FORMATS[compression].unit_roundoff
    block = LENGTH // 4
    out = np.full((n, LENGTH), u)
    columns = np.arange(block)
    out[columns % n, columns] = 1 + u
    out[:, block : 2 * block] = 1 + u
    ties = 1 + (2 * rng.integers(0, int(0.5 / u), size=(n, block)) + 1) * u
    out[:, 2 * block : 3 * block] = ties
    out[(columns + 1) % n, 3 * block + columns] = 1 + 3 * u
    return out * 2.0 ** rng.integers(-4, 5, size=LENGTH)


def random_inputs(n: int, rng: np.random.Generator) -> np.ndarray:
    """Signed values over many magnitudes (with exact zeros), ``LENGTH`` columns."""
    values = rng.standard_normal((n, LENGTH)) * 10.0 ** rng.integers(-6, 7, size=(n, LENGTH))
    values[rng.random((n, LENGTH)) < 0.05] = 0.0
    return values * rng.choice([1e-3, 1.0, 1e4])


def run(spec: str, arrays: np.ndarray, dtype: tf.DType, compression: str, **kwargs) -> list[np.ndarray]:
    """All-reduces ``arrays[d]`` on CPU d with every hop compressed; checks dtypes and
    that the replicas are bitwise identical; returns the outputs in float64."""
    tensors = [make_tensor(a, dtype, cpu(d)) for d, a in enumerate(arrays)]
    outputs = allreduce.all_reduce(
        tensors, spec, compression=CastWire(compression, everywhere=True), **kwargs
    )
    assert [t.dtype for t in outputs] == [dtype] * len(arrays)
    assert len({t.numpy().tobytes() for t in outputs}) == 1, "replicas differ"
    return [to_float64(t) for t in outputs]


def errors(spec: str, arrays: np.ndarray, dtype: tf.DType, compression: str, **kwargs) -> tuple:
    """``(error, bound, sum|x|)`` per element, over every output of every device."""
    n = len(arrays)
    inputs = [a.astype(dtype.as_numpy_dtype).astype(np.float64) for a in arrays]
    outputs = run(spec, np.array(inputs), dtype, compression, **kwargs)
    mean = kwargs.get("reduction") == "mean"
    exact = exact_sum(inputs) / (n if mean else 1)
    magnitude = np.sum(np.abs(inputs), axis=0)
    bound = allreduce.error_bound(
        spec,
        n,
        compression,
        dtype=dtype,
        worker_groups=kwargs.get("worker_groups"),
        reduction=kwargs.get("reduction", "sum"),
    )
    limit = bound.limit(magnitude, np.max(np.abs(inputs)))
    error = np.max([np.abs(out - exact) for out in outputs], axis=0)
    return error, limit, magnitude, bound


@st.composite
def cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 8))
    devices = [cpu(i) for i in range(n)]
    groups = None
    if draw(st.booleans()):
        alg = f"{draw(st.sampled_from(COMPOSABLE))}/{draw(st.sampled_from(COMPOSABLE))}"
        order = draw(st.permutations(range(n)))
        groups = partition(
            order, draw(st.sets(st.integers(1, max(1, n - 1)), max_size=n - 1)) if n > 1 else []
        )
    else:
        alg = draw(st.sampled_from(CPU_REDUCING))
    info = get_algorithm(alg)
    valid = [
        k for k in range(1, 5) if (info.takes_shards or k == 1) and info.problem(devices, k, groups) is None
    ]
    shards = draw(st.sampled_from(valid))
    return dict(
        spec=alg if shards == 1 else f"{alg}#{shards}",
        n=n,
        groups=groups,
        compression=draw(st.sampled_from(["bf16", "fp16"])),
        dtype=draw(st.sampled_from([tf.float32, tf.float64])),
        reduction=draw(st.sampled_from(["sum", "mean"])),
        adversarial=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@given(cases())
def test_every_compressed_output_is_within_the_stated_bound(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    n, compression = case["n"], case["compression"]
    arrays = adversarial(n, compression, rng) if case["adversarial"] else random_inputs(n, rng)
    error, limit, _, _ = errors(
        case["spec"],
        arrays,
        case["dtype"],
        compression,
        worker_groups=case["groups"],
        reduction=case["reduction"],
    )
    assert np.all(error <= limit), f"error {error.max()} exceeds the bound at {np.argmax(error - limit)}"


TIGHT = [(alg, n, None) for alg in [*COMPRESSING, "xring#2", "pscpu#2"] for n in (3, 8)]
TIGHT += [
    ("pscpu/xring", 8, [[0, 1, 2, 3], [4, 5, 6, 7]]),
    ("xring/rechd", 6, [[0, 1, 2], [3, 4, 5]]),
    ("simple/torus", 8, [[0, 1], [2, 3], [4, 5], [6, 7]]),
]


@pytest.mark.parametrize("compression", ["bf16", "fp16"])
@pytest.mark.parametrize(("spec", "n", "groups"), TIGHT)
def test_the_bound_is_within_ten_times_the_worst_error(spec: str, n: int, groups, compression: str) -> None:
    if get_algorithm(spec.split("#")[0]).problem([cpu(i) for i in range(n)], 1, groups) is not None:
        pytest.skip(f"{spec} does not run on {n} devices")
    rng = np.random.default_rng(n)
    error, limit, magnitude, bound = errors(
        spec, adversarial(n, compression, rng), tf.float32, compression, worker_groups=groups
    )
    assert np.all(error <= limit)
    worst = float(np.max(error / magnitude))
    assert worst * 10 >= bound.relative, f"worst relative error {worst:.3g}, bound {bound.relative:.3g}"
