"""``connect``: a client joins servers that another process started, and finds a worker
that froze or died over the network, with no process id to watch.

This pytest process starts two clusters of servers without connecting to them; a client
process connects to the first, sums, and the test freezes worker 1 (SIGSTOP) while the
client's next ``run`` waits on it; then the same with the second cluster and SIGKILL.
This process's own watchdog is told not to kill the frozen worker, so that only the
client's network heartbeat can find it.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
import tensorflow as tf

from allreduce.cluster import connect, connection, local_cluster, watchdog
from tests.oracle import exact_sum

from .conftest import InteractiveClient

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(300)]

UNRESPONSIVE_S = 2.0
#: ``run`` must name a frozen or dead worker within this (a hang, not a speed, bound).
BOUND_S = 30.0
SHAPES = {"frozen": (2, 2), "killed": (2, 1)}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Runs the client against both clusters; returns its manifest and arrays."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(watchdog.ProcessProbe, "fence", lambda self: False)
        with (
            local_cluster(*SHAPES["frozen"], connect=False) as frozen,
            local_cluster(*SHAPES["killed"], connect=False) as killed,
        ):
            args = {
                "clusters": {"frozen": frozen.cluster_spec, "killed": killed.cluster_spec},
                "op_timeout_s": 60.0,
                "unresponsive_s": UNRESPONSIVE_S,
                "seed": 11,
                "length": 1001,
            }
            client = InteractiveClient("connect", args, tmp_path_factory.mktemp("connect"))
            try:
                client.expect("ready frozen", 180)
                frozen.kill(1, signal.SIGSTOP)
                client.go()
                client.expect("faulted frozen", 120)
                frozen.kill(1)  # leaving waits on a worker that does not answer
                client.go()
                client.expect("ready killed", 120)
                killed.kill(1)
                client.go()
                client.expect("faulted killed", 120)
                client.go()
                yield client.finish(120)
            finally:
                client.kill()


@pytest.mark.parametrize("name", SHAPES)
def test_devices_come_from_the_runtime_one_list_per_worker(session, name):
    record = session[0][name]
    workers, per_worker = SHAPES[name]
    assert record["devices"] == [
        [f"/job:worker/replica:0/task:{t}/device:CPU:{c}" for c in range(per_worker)] for t in range(workers)
    ]
    assert list(record["cluster_spec"]) == ["worker"] and len(record["cluster_spec"]["worker"]) == workers
    assert record["no_process_api"], "a connected cluster has no pids or kill"


@pytest.mark.parametrize("name", SHAPES)
def test_sums_across_connected_workers_are_exact(session, name):
    manifest, arrays = session
    record = manifest[name]
    inputs = [arrays[k] for k in record["inputs"]]
    outputs = [arrays[k] for k in record["outputs"]]
    expected = exact_sum(inputs)
    for d, out in enumerate(outputs):
        assert np.array_equal(out, expected), f"device {d}"
        assert out.tobytes() == outputs[0].tobytes()
    assert record["output_devices"] == [d for worker in record["devices"] for d in worker]


@pytest.mark.parametrize(("name", "reasons"), [("frozen", {"unresponsive"}), ("killed", {"unreachable"})])
def test_run_names_the_failed_worker(session, name, reasons):
    record = session[0][name]
    assert record["error"] == "WorkerError", record
    assert record["task"] == 1
    assert record["reason"] in reasons, record["message"]
    assert "worker 1 (/job:worker/replica:0/task:1" in record["message"]
    assert record["seconds"] < BOUND_S


@pytest.mark.parametrize("name", SHAPES)
def test_leaving_drops_the_remote_devices(session, name):
    assert session[0][name]["remote_devices_after"] == []


GOOD = {"worker": ["127.0.0.1:5000", "127.0.0.1:5001"]}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cluster_spec": ["127.0.0.1:5000"]}, TypeError, "cluster_spec must be a dict"),
        ({"cluster_spec": {"worker": "127.0.0.1:5000"}}, TypeError, "job 'worker' must list"),
        ({"cluster_spec": {"worker": [5000]}}, TypeError, "must be 'host:port' strings, got int"),
        ({"cluster_spec": {"worker": []}}, ValueError, "job 'worker' has no tasks"),
        ({"cluster_spec": {"worker": ["127.0.0.1"]}}, ValueError, "address '127.0.0.1' of job 'worker'"),
        ({"cluster_spec": {"worker": ["h:70000"]}}, ValueError, "address 'h:70000'"),
        ({"cluster_spec": {"ps": ["127.0.0.1:5000"]}}, ValueError, "job_name 'worker' is not a worker job"),
        ({"job_name": 0}, TypeError, "job_name must be a str"),
        ({"job_name": "localhost"}, ValueError, "job_name 'localhost' is not a worker job"),
        ({"cluster_spec": {"worker": ["127.0.0.1:5000"] * 2}}, ValueError, "appears more than once"),
        ({"cluster_spec": {**GOOD, "localhost": ["a:1", "b:2"]}}, ValueError, "give it one address"),
        ({"cluster_spec": {"worker": ["10.1.2.3:5000"]}}, ValueError, r"need an address of this process"),
        ({"op_timeout_s": 0}, ValueError, "op_timeout_s must be a positive"),
        ({"unresponsive_s": "soon"}, TypeError, "unresponsive_s must be a number"),
        ({"cluster_spec": tf.train.ClusterSpec({"worker": {1: "h:5000"}})}, ValueError, "tasks 0..n-1"),
    ],
)
def test_bad_arguments_are_refused_before_anything_connects(kwargs, error, match):
    full = {"cluster_spec": GOOD, **kwargs}
    with pytest.raises(error, match=match), connect(full.pop("cluster_spec"), **full):
        pytest.fail("connected with bad arguments")


def test_connecting_while_connected_is_refused(monkeypatch):
    monkeypatch.setattr(connection, "_owner", "another cluster")
    with pytest.raises(RuntimeError, match="already connected to 'another cluster'"), connect(GOOD):
        pass
