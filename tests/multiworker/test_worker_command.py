"""``allreduce-worker`` and ``allreduce-bench --connect`` as docs/multiworker.md shows them.

The worker commands of the document start two workers (one from ``--cluster-spec``, one
from ``TF_CONFIG``), with its ports 2222 and 2223 replaced by free ones; they must log
their address and devices. A client process then connects through
``TFConfigClusterResolver`` and through ``SimpleClusterResolver`` and sums across them,
while a third worker asked for a port that is taken exits 1; the document's
``allreduce-bench --connect`` commands (a measurement, a ``--tune``) must exit 0 on the
workers; last, the workers must exit 0 on ``SIGTERM`` and ``SIGINT``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from allreduce.cluster.supervisor import free_ports
from tests import forkserver
from tests.oracle import exact_sum
from tests.unit.test_readme import shell_lines

from .conftest import ROOT, WorkerCommand, run_client

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(300)]

DOC = ROOT / "docs" / "multiworker.md"
DOC_PORTS = ("2222", "2223")
CPUS = 2
RESOLVERS = ("tf_config", "simple")


def _doc_commands(tool: str, ports: list[int]) -> list[tuple[dict[str, str], list[str]]]:
    """``(variables, arguments)`` of each of the document's commands of ``tool``, on ``ports``."""
    found = []
    for line in shell_lines(DOC):
        for old, new in zip(DOC_PORTS, ports):
            line = line.replace(f":{old}", f":{new}")
        words = shlex.split(line)
        env = {}
        while re.fullmatch(r"[A-Z_]+=.*", words[0], flags=re.S):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if words[0] == tool:
            found.append((env, words[1:]))
    return found


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """The cluster spec, the two running workers and their start-up logs."""
    folder = tmp_path_factory.mktemp("workers")
    ports = free_ports(2)
    commands = _doc_commands("allreduce-worker", ports)
    assert len(commands) == 2, commands
    started = [WorkerCommand(a, folder / f"worker{i}.log", env) for i, (env, a) in enumerate(commands)]
    try:
        logs = [w.wait_serving(120) for w in started]
        yield {"worker": [f"127.0.0.1:{p}" for p in ports]}, started, logs, ports
    finally:
        for w in started:
            w.kill()


@pytest.fixture(scope="module")
def session(workers, tmp_path_factory):
    """A client connected through each resolver in turn (its manifest and arrays), while a
    third worker tries the port of worker 0 and a fourth asks for GPUs (their exit statuses
    and logs)."""
    spec = workers[0]
    folder = tmp_path_factory.mktemp("resolvers")
    task0 = ["--cluster-spec", json.dumps(spec), "--task-index", "0"]
    taken = WorkerCommand(task0, folder / "taken.log")
    gpus = WorkerCommand([*task0, "--gpus"], folder / "gpus.log")
    try:
        args = {"cluster_spec": spec, "resolvers": list(RESOLVERS), "op_timeout_s": 60.0, "seed": 5}
        client = run_client("resolvers", {**args, "length": 513}, folder, timeout_s=180)
        return client, taken.wait(120), taken.text(), gpus.wait(120), gpus.text()
    finally:
        taken.kill()
        gpus.kill()


@pytest.fixture(scope="module")
def bench_runs(workers, session):
    """The document's ``allreduce-bench --connect`` commands, run after the client: statuses and output."""
    commands = [c for c in _doc_commands("allreduce-bench", workers[3]) if "--connect" in c[1]]
    assert len(commands) == 2, commands
    runs = []
    for env, args in commands:
        done = forkserver.run(
            [str(Path(sys.executable).with_name("allreduce-bench")), *args],
            cwd=ROOT,
            env={**os.environ, **env},
            timeout=180,
        )
        runs.append((args, done.returncode, done.stdout, done.stderr))
    return runs


@pytest.fixture(scope="module")
def stopped(workers, session, bench_runs):
    """Worker 0 sent SIGTERM, worker 1 SIGINT, once the clients are done: exit statuses and logs."""
    statuses = {}
    for worker, sig in zip(workers[1], (signal.SIGTERM, signal.SIGINT)):
        worker.process.send_signal(sig)
        statuses[sig.name] = (worker.wait(30), worker.text())
    return statuses


def _expected_devices(tasks: int) -> list[list[str]]:
    return [[f"/job:worker/replica:0/task:{t}/device:CPU:{c}" for c in range(CPUS)] for t in range(tasks)]


def test_a_worker_logs_its_address_and_devices_at_start(workers):
    spec, _, logs, _ = workers
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
    _, status, text, _, _ = session
    assert status == 1, text[-2000:]
    errors = [line for line in text.splitlines() if line.startswith("allreduce-worker: error:")]
    assert len(errors) == 1, text[-2000:]
    assert f"cannot start the server at {workers[0]['worker'][0]}" in errors[0]


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="this host has a GPU")
def test_gpus_on_a_host_without_one_exits_2_with_one_line(session):
    status, text = session[3:]
    assert status == 2, text[-2000:]
    errors = [line for line in text.splitlines() if line.startswith("allreduce-worker: error:")]
    assert len(errors) == 1, text[-2000:]
    assert errors[0].startswith("allreduce-worker: error: --gpus: TensorFlow sees no GPU on this host")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_exits_0_on_sigterm_and_sigint(stopped, sig):
    status, text = stopped[sig.name]
    assert status == 0, text[-2000:]
    assert f"{sig.name}: stopping" in text


def test_the_documented_bench_commands_measure_and_tune_on_the_workers(bench_runs):
    (_, status, out, err), (tune, tune_status, tune_out, tune_err) = bench_runs
    assert status == 0, err[-3000:]
    assert "4 x CPU over 2 workers" in out
    assert "All results exact and identical on every device (#wrong 0)." in out
    assert "--tune" in tune and tune_status == 0, tune_err[-3000:]
    assert tune_out.startswith("# tune: "), tune_out[:500]
