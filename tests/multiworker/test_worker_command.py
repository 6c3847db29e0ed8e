"""``allreduce-worker``: servers that a client reaches through ``connect`` with a cluster
resolver, that log their address and devices, and that exit 0 on ``SIGTERM`` and ``SIGINT``.

Two workers start on free loopback ports, one from ``--cluster-spec``, one from
``TF_CONFIG``; a client process connects to them through ``TFConfigClusterResolver``,
then through ``SimpleClusterResolver``, and sums across them; a third worker asked to
serve at a port that is taken exits 1.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from allreduce._supervisor import LOOPBACK, free_ports
from tests.oracle import exact_sum

from .conftest import WorkerCommand, run_client

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(240)]

CPUS = 2
RESOLVERS = ("tf_config", "simple")


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """The cluster spec, the two running workers and their start-up logs."""
    folder = tmp_path_factory.mktemp("workers")
    spec = {"worker": [f"{LOOPBACK}:{p}" for p in free_ports(2)]}
    tf_config = json.dumps({"cluster": spec, "task": {"type": "worker", "index": 1}})
    started = [
        WorkerCommand(
            ["--cluster-spec", json.dumps(spec), "--task-index", "0", "--devices", str(CPUS)],
            folder / "worker0.log",
        ),
        WorkerCommand(["--devices", str(CPUS)], folder / "worker1.log", env={"TF_CONFIG": tf_config}),
    ]
    try:
        logs = [w.wait_serving(120) for w in started]
        yield spec, started, logs
    finally:
        for w in started:
            w.kill()


@pytest.fixture(scope="module")
def session(workers, tmp_path_factory):
    """A client connected through each resolver in turn (its manifest and arrays), while a
    third worker tries the port of worker 0 (its exit status and log)."""
    spec, _, _ = workers
    folder = tmp_path_factory.mktemp("resolvers")
    taken = WorkerCommand(["--cluster-spec", json.dumps(spec), "--task-index", "0"], folder / "taken.log")
    try:
        args = {"cluster_spec": spec, "resolvers": list(RESOLVERS), "op_timeout_s": 60.0, "seed": 5}
        client = run_client("resolvers", {**args, "length": 513}, folder, timeout_s=180)
        return client, taken.wait(120), taken.text()
    finally:
        taken.kill()


@pytest.fixture(scope="module")
def stopped(workers, session):
    """Worker 0 sent SIGTERM, worker 1 SIGINT, once the client is done: exit statuses and logs."""
    statuses = {}
    for worker, sig in zip(workers[1], (signal.SIGTERM, signal.SIGINT)):
        worker.process.send_signal(sig)
        statuses[sig.name] = (worker.wait(30), worker.text())
    return statuses


def _expected_devices(tasks: int) -> list[list[str]]:
    return [[f"/job:worker/replica:0/task:{t}/device:CPU:{c}" for c in range(CPUS)] for t in range(tasks)]


def test_a_worker_logs_its_address_and_devices_at_start(workers):
    spec, _, logs = workers
    for task, (address, log) in enumerate(zip(spec["worker"], logs)):
        assert f"serving /job:worker/replica:0/task:{task} at {address}" in log
        assert f"devices: {', '.join(_expected_devices(2)[task])}" in log


@pytest.mark.parametrize("kind", RESOLVERS)
def test_connect_takes_a_cluster_resolver_and_sums_exactly(session, workers, kind):
    manifest, arrays = session[0]
    record = manifest[kind]
    assert record["cluster_spec"] == workers[0]
    assert record["devices"] == record["cpus"] == _expected_devices(2)
    assert record["gpus"] == [[], []]
    inputs = [arrays[k] for k in record["inputs"]]
    outputs = [arrays[k] for k in record["outputs"]]
    assert len(outputs) == 2 * CPUS
    expected = exact_sum(inputs)
    for d, out in enumerate(outputs):
        assert np.array_equal(out, expected), f"{kind}: device {d}"
        assert out.tobytes() == outputs[0].tobytes()
    assert record["output_devices"] == [d for worker in _expected_devices(2) for d in worker]


def test_a_port_that_is_taken_exits_1_with_one_line(workers, session):
    _, status, text = session
    assert status == 1, text[-2000:]
    errors = [line for line in text.splitlines() if line.startswith("allreduce-worker: error:")]
    assert len(errors) == 1, text[-2000:]
    assert f"cannot start the server at {workers[0]['worker'][0]}" in errors[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_exits_0_on_sigterm_and_sigint(stopped, sig):
    status, text = stopped[sig.name]
    assert status == 0, text[-2000:]
    assert f"{sig.name}: stopping" in text
