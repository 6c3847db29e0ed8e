"""A cluster's tensors after it closed, and a worker frozen under calls made outside ``run``.

One client process: a 2x1 cluster sums and closes, then the client touches the result
and the inputs, which live on workers that are gone (this once killed the process with
SIGSEGV). It then opens a 2x2 cluster, calls a ``tf.function`` all-reduce directly (not
through ``run``) in a loop, and freezes worker 1 with SIGSTOP mid-loop: the watchdog
kills the frozen worker, so that the pending call and every later one fail instead of
hanging, as they did when only ``run`` was bounded.
"""

from __future__ import annotations

import pytest

from .conftest import run_client

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(300)]

OP_TIMEOUT_S = 20.0
#: The most a direct call on a frozen worker may take to fail (a hang, not a speed, bound).
BOUND_S = 60.0
WORKER_0 = "/job:worker/replica:0/task:0"


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    args = {"seed": 3, "length": 1 << 20, "op_timeout_s": OP_TIMEOUT_S}
    return run_client("lifecycle", args, tmp_path_factory.mktemp("lifecycle"), 240)[0]


def test_results_are_right_while_the_cluster_is_open(lifecycle):
    assert lifecycle["inside"] == [3.0] * 4


@pytest.mark.parametrize("use", ["numpy", "all_reduce"])
def test_closed_clusters_tensors_raise_an_error_naming_the_worker(lifecycle, use):
    outcome = lifecycle["closed"][use]
    assert outcome["raised"] is not None, f"{use} after the cluster closed gave {outcome}"
    assert WORKER_0 in outcome["message"]


def test_closed_clusters_tensor_still_names_its_device(lifecycle):
    assert lifecycle["closed"]["device"] == {"raised": None, "value": repr(f"{WORKER_0}/device:CPU:0")}


@pytest.mark.parametrize("when", ["numpy during the next cluster", "numpy after the next cluster"])
def test_old_tensors_raise_while_and_after_another_cluster_runs(lifecycle, when):
    # The next cluster has a task 1 again: an old tensor of task 1 must not read from it.
    outcome = lifecycle["closed"][when]
    assert outcome["raised"] is not None, f"{when}: {outcome}"


def test_direct_call_pending_on_a_frozen_worker_fails_fast(lifecycle):
    frozen = lifecycle["frozen"]
    assert frozen["first_ok"], "the direct all-reduce before the freeze gave a wrong sum"
    assert frozen["pending_is_tensorflow_error"], frozen["pending_error"]
    assert frozen["pending_seconds"] < BOUND_S


def test_direct_call_after_a_worker_froze_fails_fast(lifecycle):
    frozen = lifecycle["frozen"]
    assert frozen["later"]["raised"] is not None, frozen["later"]
    assert frozen["later_seconds"] < BOUND_S


def test_run_names_the_frozen_worker_which_the_watchdog_killed(lifecycle):
    frozen = lifecycle["frozen"]
    assert frozen["run"]["raised"] == "WorkerError"
    assert "worker 1 (/job:worker/replica:0/task:1" in frozen["run"]["message"]
    assert (frozen["task"], frozen["reason"]) == (1, "stopped")
    assert frozen["fenced"]
