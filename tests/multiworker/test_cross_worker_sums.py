"""Every CPU spec across worker processes gives the exact sum, identical on every device.

One client process per cluster shape (2 workers x 2 CPUs, 3 workers x 1) runs every case
and records inputs and outputs; each test here checks one case against the float64
oracle. Inputs are small integers, so every order of summation is exact and all
replicas must equal the oracle bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from allreduce.planning.registry import CPU, algorithm_names, get_algorithm
from tests.oracle import exact_sum

from .conftest import run_client

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(600)]

SHAPES = {"2x2": (2, 2), "3x1": (3, 1)}
LENGTH = 1001  # not a multiple of any device or shard count

CPU_ALGORITHMS = [
    name
    for name in algorithm_names()
    if CPU in get_algorithm(name).device_types and get_algorithm(name).reduces
]
COMPOSABLE = [name for name in CPU_ALGORITHMS if get_algorithm(name).composable]
SPECS = [
    *CPU_ALGORITHMS,
    "xring#2",
    "pscpu#2",
    *(f"{lower}/{upper}" for lower in COMPOSABLE for upper in COMPOSABLE),
    "pscpu/xring#2",
    "xring/pscpu#2",
    "pscpu:500:xring#2",
    "xring:2k:pscpu/pscpu",
]
FUNCTION_SPECS = ["xring", "pscpu/pscpu", "collective", "xring/collective"]
BATCH_SPECS = ["pscpu/pscpu", "xring", "collective", "pscpu:100:xring#2"]
COMPAT_ALGS = [("pscpu/pscpu", 1), ("xring", 2), ("collective", 1)]

_results: dict[str, tuple[dict, dict]] = {}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs the client once per cluster shape, on first use."""

    def get(shape: str) -> tuple[dict, dict]:
        if shape not in _results:
            workers, per_worker = SHAPES[shape]
            args = {
                "workers": workers,
                "per_worker": per_worker,
                "seed": workers * 10 + per_worker,
                "length": LENGTH,
                "specs": SPECS,
                "function_specs": FUNCTION_SPECS,
                "batch_specs": BATCH_SPECS,
                "compat_algs": COMPAT_ALGS,
            }
            _results[shape] = run_client("sums", args, tmp_path_factory.mktemp(f"sums{shape}"), 420)
        return _results[shape]

    return get


def _case(results, shape: str, name: str) -> tuple[dict, dict, dict]:
    manifest, arrays = results(shape)
    case = manifest["cases"][name]
    assert case["error"] is None, f"{name} failed on {shape}:\n{case['error']}"
    return manifest, arrays, case


def _check_identical_and_exact(outputs: list[np.ndarray], inputs: list[np.ndarray]) -> None:
    expected = exact_sum(inputs)
    for d, out in enumerate(outputs):
        assert out.shape == expected.shape, f"device {d}: shape {out.shape}, expected {expected.shape}"
        wrong = np.flatnonzero(out.ravel() != expected.ravel())
        assert wrong.size == 0, f"device {d}: {wrong.size} wrong values, first at {wrong[:5]}"
        assert out.tobytes() == outputs[0].tobytes(), f"device {d} differs from device 0"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spec", SPECS)
def test_eager_all_reduce_across_workers_is_exact(results, shape, spec):
    manifest, arrays, case = _case(results, shape, f"eager {spec}")
    inputs = [arrays[k] for k in manifest["inputs"]]
    outputs = [arrays[row[0]] for row in case["outputs"]]
    assert len(outputs) == len(manifest["devices"]) == SHAPES[shape][0] * SHAPES[shape][1]
    _check_identical_and_exact(outputs, inputs)
    assert [row[0] for row in case["devices"]] == manifest["devices"], "a result is not on its input's device"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spec", FUNCTION_SPECS)
def test_all_reduce_in_tf_function_across_workers_is_exact(results, shape, spec):
    manifest, arrays, case = _case(results, shape, f"function {spec}")
    inputs = [arrays[k] for k in manifest["inputs"]]
    _check_identical_and_exact([arrays[row[0]] for row in case["outputs"]], inputs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spec", BATCH_SPECS)
def test_packed_batch_all_reduce_across_workers_is_exact(results, shape, spec):
    manifest, arrays, case = _case(results, shape, f"batch {spec}")
    towers = [[arrays[k] for k in tower] for tower in manifest["batch_inputs"]]
    outputs = [[arrays[k] for k in row] for row in case["outputs"]]
    for i in range(len(towers[0])):
        _check_identical_and_exact([row[i] for row in outputs], [tower[i] for tower in towers])
    for d, row in enumerate(case["devices"]):
        assert set(row) == {manifest["devices"][d]}, f"tower {d} results on {row}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("alg", "shards"), COMPAT_ALGS)
def test_sum_gradients_all_reduce_across_workers_is_exact(results, shape, alg, shards):
    manifest, arrays, case = _case(results, shape, f"compat {alg}#{shards}")
    towers = [[arrays[k] for k in tower] for tower in manifest["batch_inputs"]]
    outputs = [[arrays[k] for k in row] for row in case["outputs"]]
    for i in range(len(towers[0])):
        _check_identical_and_exact([row[i] for row in outputs], [tower[i] for tower in towers])


@pytest.mark.parametrize("shape", SHAPES)
def test_cluster_traffic_stays_on_loopback_and_workers_are_gone(results, shape):
    manifest, _ = results(shape)
    assert all(a.startswith("127.0.0.1:") for a in manifest["addresses"])
    connections = manifest["connections"]
    assert connections, "no TCP connection seen between the client and the workers"
    off_loopback = [c for c in connections if not all(end.startswith("127.0.0.1:") for end in c)]
    assert off_loopback == []
    assert manifest["pids_after"] == {str(p): False for p in manifest["pids"]}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("when", ["before", "during", "after"])
def test_collective_on_the_callers_own_devices_survives_connecting(results, shape, when):
    # Connecting changes the eager context; collective group keys start afresh each time.
    _, arrays, case = _case(results, shape, f"local collective {when}")
    outputs = [arrays[row[0]] for row in case["outputs"]]
    _check_identical_and_exact(outputs, [np.full([7], float(i + 1)) for i in range(len(outputs))])
    assert len(outputs) == 3
