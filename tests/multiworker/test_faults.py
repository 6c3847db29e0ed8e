"""A worker killed or frozen in the middle of large all-reduces: a named error, never a hang.

For each algorithm one client process runs a loop of 16 MiB all-reduces on a 2x2
cluster, kills worker 1 (SIGKILL) mid-loop, then does the same with SIGSTOP on a new
cluster, then checks that a third cluster still sums correctly in the same process.
"""

from __future__ import annotations

import pytest

from .conftest import process_gone, run_client

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(400)]

OP_TIMEOUT_S = 20.0
LENGTH = 4 << 20  # float32 elements per device: 16 MiB

_results: dict[str, dict] = {}


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    def get(alg: str) -> dict:
        if alg not in _results:
            args = {"alg": alg, "seed": 7, "length": LENGTH, "op_timeout_s": OP_TIMEOUT_S}
            _results[alg] = run_client("faults", args, tmp_path_factory.mktemp("faults"), 360)[0]
        return _results[alg]

    return get


ALGORITHMS = ["xring", "collective"]
FAULTS = {"kill": ("exited", "SIGKILL"), "stop": ("stopped", "stopped")}


@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("how", FAULTS)
def test_fault_mid_all_reduce_raises_worker_error_naming_the_worker(faults, alg, how):
    record = faults(alg)[how]
    reason, words = FAULTS[how]
    assert record["first_ok"], "the all-reduce before the fault gave a wrong sum"
    assert record["error"] == "WorkerError", record
    # Found by the watchdog, not by the deadline (reason would be "timeout").
    assert record["reason"] == reason, record["message"]
    assert record["task"] == 1
    assert "worker 1 (/job:worker/replica:0/task:1" in record["message"]
    assert words in record["message"]
    assert record["refuses_after_fault"]


@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("how", FAULTS)
def test_failed_all_reduce_leaves_inputs_unchanged(faults, alg, how):
    record = faults(alg)[how]
    assert record["inputs_unchanged"] is True
    assert record["survivor_inputs_equal"] is True


@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("how", FAULTS)
def test_no_worker_outlives_its_cluster_after_a_fault(faults, alg, how):
    record = faults(alg)[how]
    assert record["alive_after_exit"] == []
    assert all(process_gone(pid) for pid in record["pids"])


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_process_runs_a_new_cluster_after_faults(faults, alg):
    assert faults(alg)["after"] == [[3.0] * 5, [3.0] * 5]
