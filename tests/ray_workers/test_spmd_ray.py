"""``spmd.launch(..., backend="ray")`` on the test process's Ray: exact sums on every
device of every worker, bitwise identical across workers; a worker's error with its
index and node; a killed actor ends the launch with a ``WorkerError`` within a bound.

The test process is the Ray driver (the session's Ray, see conftest.py): ``launch``
uses it and leaves it running. Each launch starts TensorFlow in two fresh actors.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from allreduce import WorkerError, spmd
from tests.spmd import _scenarios
from tests.spmd._scenarios import expected

from . import _spmd

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.multiworker, pytest.mark.timeout(300)]

WORKERS, DEVICES = 2, 2
#: A killed actor must end the launch within this many seconds (measured: well under 1 s).
DEATH_BOUND_S = 10.0


@pytest.fixture(scope="module")
def results(ray_address):
    fn = functools.partial(_spmd.sums, DEVICES)
    out = spmd.launch(fn, WORKERS, devices_per_worker=DEVICES, backend="ray", timeout_s=180)
    assert ray.is_initialized()  # the caller's Ray is left running
    return out


@pytest.mark.parametrize("spec", _spmd.SPECS)
def test_every_device_of_every_worker_gets_the_exact_sum_bitwise_identical(results, spec):
    for length, dtype in _spmd.CASES:
        want = expected(WORKERS, DEVICES, length, dtype)
        outputs = [got for per_worker in results for got in per_worker[spec, length, dtype]]
        assert len(outputs) == WORKERS * DEVICES
        for got in outputs:
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got.astype(np.float64), want)
            assert got.tobytes() == outputs[0].tobytes()


def test_each_actor_has_its_task_its_node_address_and_its_cpus(results):
    node_ip = ray.util.get_node_ip_address()
    configs = [json.loads(r["tf_config"]) for r in results]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == WORKERS and all(a.startswith(f"{node_ip}:") for a in addresses)
    for task, config in enumerate(configs):
        assert config == {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": task}}
    for task, r in enumerate(results):
        mine = [name for name in r["cpus"] if f"/task:{task}/" in name]
        assert mine == [f"/job:worker/replica:0/task:{task}/device:CPU:{d}" for d in range(DEVICES)], r[
            "cpus"
        ]
    assert len({r["pid"] for r in results} | {os.getpid()}) == WORKERS + 1


def test_a_worker_error_names_its_index_and_node(ray_address):
    fn = functools.partial(_scenarios.fails, "boom on a Ray worker")
    with pytest.raises(WorkerError) as info:
        spmd.launch(fn, WORKERS, backend="ray", timeout_s=120)
    assert info.value.task == 1 and info.value.reason == "raised"
    assert "worker 1 (/job:worker/replica:0/task:1, node " in str(info.value)
    assert "boom on a Ray worker" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_killed_actor_ends_the_launch_with_its_index_promptly(ray_address, tmp_path):
    killed = {}

    def kill_worker_1():
        pid_file = tmp_path / "pid-1"
        while not pid_file.exists():
            time.sleep(0.05)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        killed["at"] = time.monotonic()

    killer = threading.Thread(target=kill_worker_1, daemon=True)
    killer.start()
    fn = functools.partial(_spmd.sleep_after_writing_pid, str(tmp_path))
    with pytest.raises(WorkerError) as info:
        spmd.launch(fn, WORKERS, backend="ray", timeout_s=120)
    after_s = time.monotonic() - killed["at"]
    assert info.value.task == 1 and info.value.reason == "exited"
    assert "worker 1 (/job:worker/replica:0/task:1, node " in str(info.value)
    assert "died" in str(info.value)
    assert after_s < DEATH_BOUND_S
