"""``ray_cluster`` from a client process joined to the test process's Ray: exact sums on
every device, the training example against exact SGD, and a worker ended by ``ray.kill``,
killed (``SIGKILL``) or frozen (``SIGSTOP``) under ``run`` and under direct calls.

One client runs it all (each Ray cluster start imports TensorFlow in fresh actors):
sums and training on a 2x2 cluster that ``ray.kill`` then ends, one 2x1 cluster per
other fault, then the example's command line.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.multiworker.conftest import process_gone, run_client
from tests.multiworker.test_multiworker_training import LR, STEPS, Exact, _data, _fractions

from .conftest import CLIENT

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.multiworker, pytest.mark.timeout(400)]

LENGTH = 1 << 16
FAULT_LENGTH = 1 << 18  # float32 elements per device: 1 MiB
UNRESPONSIVE_S = 2.0
#: The documented bounds: a death within 5 s with the default settings, a freeze within unresponsive_s + 2 s.
DEATH_BOUND_S = 5.0
FREEZE_BOUND_S = UNRESPONSIVE_S + 2.0
#: A direct call on a failed worker must fail, not hang (a hang bound, not a speed bound).
DIRECT_BOUND_S = 20.0
WORKER_1 = "worker 1 (/job:worker/replica:0/task:1, node "


@pytest.fixture(scope="module")
def workers(ray_address, tmp_path_factory):
    batches, initial = _data(seed=5)
    args = {
        "address": ray_address,
        "seed": 11,
        "length": LENGTH,
        "fault_length": FAULT_LENGTH,
        "unresponsive_s": UNRESPONSIVE_S,
        "batches": [(x.tolist(), y.tolist()) for x, y in batches],
        "initial": [w.tolist() for w in initial],
        "lr": float(LR),
    }
    manifest, arrays = run_client("workers", args, tmp_path_factory.mktemp("ray"), 360, client=CLIENT)
    exact = Exact()
    weights = [_fractions(w) for w in initial]
    for x, y in batches:
        weights = exact.step(weights, _fractions(x), _fractions(y))
    return manifest, arrays, weights


def test_cluster_names_its_devices_nodes_and_actors(workers):
    manifest = workers[0]
    assert manifest["devices"] == [
        [f"/job:worker/replica:0/task:{t}/device:CPU:{c}" for c in range(2)] for t in range(2)
    ]
    assert manifest["actors"] == 2
    addresses = manifest["cluster_spec"]["worker"]
    assert len(addresses) == 2 and len(set(addresses)) == 2
    for (node_id, ip), address in zip(manifest["nodes"], addresses):
        assert node_id == manifest["node_of_driver"]  # one Ray node here
        assert address.startswith(f"{ip}:")


CASES = ["eager pscpu/pscpu", "function pscpu/pscpu", "eager xring", "function xring"]


@pytest.mark.parametrize("case", CASES)
def test_sums_on_every_device_equal_the_float64_oracle(workers, case):
    manifest, arrays, _ = workers
    entry = manifest["cases"][case]
    assert entry["error"] is None, entry["error"]
    expected = np.sum([arrays[k] for k in manifest["inputs"]], axis=0)
    outputs = [arrays[k] for row in entry["outputs"] for k in row]
    assert len(outputs) == 4
    for out in outputs:
        np.testing.assert_array_equal(out, expected)
        assert out.tobytes() == outputs[0].tobytes()
    if case.startswith("eager"):
        assert [d for row in entry["devices"] for d in row] == [d for w in manifest["devices"] for d in w]


@pytest.mark.parametrize("run", ["weights", "reference"])
def test_training_example_equals_exact_sgd(workers, run):
    manifest, arrays, exact = workers
    training = manifest["training"]
    assert training["replicas_identical"] == [True] * STEPS
    # Each device's input pipeline lives on its worker.
    assert training["pipeline_devices"] == [d for w in manifest["devices"] for d in w]
    got = [_fractions(arrays[key]) for key in training[run]]
    for name, value, expected in zip(["w1", "b1", "w2", "b2"], got, exact):
        assert value == expected, f"{run} {name}: {value} != {expected}"


@pytest.mark.parametrize(
    ("how", "reason", "words", "bound_s"),
    [
        ("ray.kill", "exited", "killed by `ray.kill`", DEATH_BOUND_S),
        ("SIGKILL", "exited", "worker process has died", DEATH_BOUND_S),
        ("SIGSTOP", "unresponsive", "has not answered a heartbeat", FREEZE_BOUND_S),
    ],
)
def test_fault_makes_run_raise_worker_error_naming_worker_node_and_reason(
    workers, how, reason, words, bound_s
):
    record = workers[0][how]
    assert record["first_ok"], "the all-reduce before the fault gave a wrong sum"
    assert record["error"] == "WorkerError", record
    assert (record["task"], record["reason"]) == (1, reason), record["message"]
    assert WORKER_1 in record["message"]
    assert words in record["message"]
    assert record["seconds"] < bound_s, f"{how}: WorkerError {record['seconds']:.2f} s after the fault"
    assert record["refuses_after_fault"]


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL", "SIGSTOP"])
def test_direct_calls_pending_and_later_fail_instead_of_hanging(workers, how):
    record = workers[0][how]
    pending = record["direct_pending"]
    assert isinstance(pending, dict), pending
    assert pending["seconds"] < DIRECT_BOUND_S
    assert record["direct_later"]["raised"] is not None
    assert record["direct_later_seconds"] < DIRECT_BOUND_S


def test_frozen_worker_is_fenced(workers):
    record = workers[0]["SIGSTOP"]
    assert "killed it" in record["message"]
    assert record["process_gone_in_cluster"]


def test_leaving_the_block_ends_actors_and_removes_placement_groups(workers):
    manifest = workers[0]
    assert manifest["alive_after_exit"] == []
    assert all(process_gone(p) for how in ("ray.kill", "SIGKILL", "SIGSTOP") for p in manifest[how]["pids"])
    assert manifest["group_states"] == ["REMOVED"] * 3


def test_ray_joined_by_address_is_left_running(workers):
    manifest = workers[0]
    # ray_cluster initialised Ray with address=...: it disconnects, the instance runs on.
    assert manifest["ray_left_initialized"] is False
    assert manifest["ray_still_initialized"] is True


def test_example_command_line_trains_on_ray(workers):
    output = workers[0]["cli_output"]
    assert "4 replicas on 2 Ray workers" in output
    assert "replicas bitwise identical after every step: True" in output
    assert "4 steps in" in output
