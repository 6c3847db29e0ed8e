"""SPMD all-reduces across local worker processes: exact and bitwise identical everywhere.

One ``spmd.launch`` per cluster shape runs every spec, length and dtype, a batch with
packing, a mean, and four threads on four channels at once (``_scenarios.every_spec``);
each result of each device of each worker is compared with the float64 oracle and, bit
for bit, with worker 0's.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from allreduce import WorkerError, spmd
from tests.spmd import _scenarios

pytestmark = pytest.mark.multiworker

SHAPES = [(4, 1), (3, 2)]


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def run(request):
    workers, devices = request.param
    fn = functools.partial(_scenarios.every_spec, devices)
    return workers, devices, spmd.launch(fn, workers, devices_per_worker=devices, timeout_s=240)


def _check(outputs, expected, dtype):
    reference = outputs[0][0]
    for per_worker in outputs:
        for got in per_worker:
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got.astype(np.float64), expected)
            assert got.tobytes() == reference.tobytes()


@pytest.mark.parametrize("spec", _scenarios.SPECS)
def test_every_spec_is_exact_and_bitwise_identical_on_every_worker(run, spec):
    workers, devices, results = run
    for length, dtype in _scenarios.CASES:
        outputs = [r[spec, length, dtype] for r in results]
        assert all(len(o) == devices for o in outputs)
        _check(outputs, _scenarios.expected(workers, devices, length, dtype), dtype)


def test_batch_with_packing_and_ranges_is_exact(run):
    workers, devices, results = run
    for i, length in enumerate((3, 5, 700)):
        outputs = [[tower[i] for tower in r["batch"]] for r in results]
        _check(outputs, _scenarios.expected(workers, devices, length, "float32", salt=i), "float32")


def test_mean_divides_by_every_device_of_every_worker(run):
    workers, devices, results = run
    expected = _scenarios.expected(workers, devices, 10, "float64") / (workers * devices)
    for r in results:
        for got in r["mean"]:
            np.testing.assert_allclose(got, expected, rtol=1e-15)
            assert got.tobytes() == results[0]["mean"][0].tobytes()


def test_threads_on_separate_channels_never_mix_their_exchanges(run):
    workers, devices, results = run
    for t in range(4):
        expected = _scenarios.expected(workers, devices, 100 * (t + 1), "float32", salt=t)
        for round_ in range(len(results[0]["threads"][t])):
            _check([r["threads"][t][round_] for r in results], expected, "float32")


def test_a_worker_error_reaches_the_launcher_with_its_index():
    with pytest.raises(WorkerError) as info:
        spmd.launch(functools.partial(_scenarios.fails, "boom in worker"), 2, timeout_s=120)
    assert info.value.task == 1
    assert info.value.reason == "raised"
    assert "boom in worker" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_port_taken_after_it_was_picked_is_retried_with_new_ports(monkeypatch):
    import socket

    from allreduce.spmd import launcher

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = []
    real = launcher.free_ports

    def pick(count):
        picks.append(count)
        return [taken.getsockname()[1], *real(count - 1)] if len(picks) == 1 else real(count)

    monkeypatch.setattr(launcher, "free_ports", pick)
    try:
        results = spmd.launch(functools.partial(_scenarios.one_sum, 64), 2, timeout_s=120)
    finally:
        taken.close()
    assert picks == [2, 2]
    want = _scenarios.expected(2, 1, 64, "float32").astype(np.float32)
    for got in results:
        np.testing.assert_array_equal(got, want)
    assert results[0].tobytes() == results[1].tobytes()


def test_with_tf_config_already_set_launch_runs_fn_here_only():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from allreduce.cluster.supervisor import free_ports

    root = Path(__file__).resolve().parents[2]
    config = {
        "cluster": {"worker": [f"127.0.0.1:{free_ports(1)[0]}"]},
        "task": {"type": "worker", "index": 0},
    }
    code = (
        "import functools\n"
        "from allreduce import spmd\n"
        "from tests.spmd import _scenarios\n"
        "try:\n"
        "    spmd.launch(print, 2)\n"
        "except ValueError as err:\n"
        "    print('refused:', err)\n"
        "print(spmd.launch(functools.partial(_scenarios.fails, 'never raised on worker 0'), 1))\n"
    )
    env = dict(os.environ, TF_CONFIG=json.dumps(config), PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: num_workers is 2 but TF_CONFIG names 1 workers" in done.stdout
    assert done.stdout.strip().endswith("[0]")
