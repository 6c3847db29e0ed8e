"""``connect`` never hangs: a worker that cannot be reached, one dead worker among
several, a socket that accepts and never answers, and a server that answers its
heartbeat but never anything else all end in ``WorkerError`` within ``op_timeout_s``,
whether TensorFlow or the library was imported first.

Each case runs in its own process (a hang must be reported, not hang the suite), all
at once; a case that does not end within :data:`HANG_S` fails as a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import forkserver

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
OP_TIMEOUT_S = 5.0
UNRESPONSIVE_S = 2.0
#: A case still running after this long hangs.
HANG_S = 150.0

#: A gRPC server that answers the heartbeat (``GetStatus``) and leaves every other call
#: waiting; it prints its port and exits when its standard input closes.
HEARTBEAT_ONLY = """
import os, sys, threading
from concurrent import futures
import grpc
never = threading.Event()
class Handler(grpc.GenericRpcHandler):
    def service(self, details):
        if details.method.endswith("/GetStatus"):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
        return grpc.unary_unary_rpc_method_handler(lambda request, context: never.wait())
server = grpc.server(futures.ThreadPoolExecutor(32))
server.add_generic_rpc_handlers((Handler(),))
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
sys.stdin.read()
os._exit(0)
"""

CLIENT = """
import json, socket, subprocess, sys, threading, time
case, first = sys.argv[1], sys.argv[2]
if first == "tensorflow":
    import tensorflow
from allreduce.cluster import connection as _connection
from allreduce.cluster import WorkerError, connect, local_cluster
record = {"tensorflow_first": "tensorflow" in sys.modules}

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def attempt(spec):
    started = time.monotonic()
    try:
        with connect(spec, op_timeout_s=OP_TIMEOUT_S, unresponsive_s=UNRESPONSIVE_S):
            record["error"] = None
    except WorkerError as err:
        record.update(error="WorkerError", task=err.task, reason=err.reason, message=str(err))
    record["seconds"] = time.monotonic() - started
    record["still_connected"] = _connection.owner() is not None

if case == "refused":
    attempt({"worker": [f"127.0.0.1:{free_port()}"]})
elif case == "one of two killed":
    with local_cluster(2, 1, connect=False) as servers:
        servers.kill(1)
        import tensorflow  # a local cluster imports it
        attempt(servers.cluster_spec)
elif case == "silent socket":
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    def accept():
        while True:
            held.append(listener.accept())
    threading.Thread(target=accept, daemon=True).start()
    attempt({"worker": [f"127.0.0.1:{listener.getsockname()[1]}"]})
elif case == "heartbeat only":
    command = [sys.executable, "-c", HEARTBEAT_ONLY]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    attempt({"worker": [f"127.0.0.1:{port}"]})
    server.stdin.close()
    server.wait(30)
print("RESULT " + json.dumps(record), flush=True)
"""

CASES = {
    # (case, imported first): (task, reasons)
    ("refused", "tensorflow"): (0, {"unreachable"}),
    ("refused", "allreduce"): (0, {"unreachable"}),
    ("one of two killed", "tensorflow"): (1, {"unreachable"}),
    ("silent socket", "tensorflow"): (0, {"unresponsive", "unreachable"}),
    ("heartbeat only", "tensorflow"): (None, {"timeout"}),
}


def _script() -> str:
    constants = (
        f"OP_TIMEOUT_S = {OP_TIMEOUT_S}\nUNRESPONSIVE_S = {UNRESPONSIVE_S}\n"
        f"HEARTBEAT_ONLY = {HEARTBEAT_ONLY!r}\n"
    )
    return constants + textwrap.dedent(CLIENT)


@pytest.fixture(scope="module")
def outcomes():
    """Runs every case at once; ``{case: (record or None, the end of stderr)}``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    # A case that imports TensorFlow first is a fork of a process that has (tests/forkserver.py).
    started = {
        key: (forkserver.popen if key[1] == "tensorflow" else subprocess.Popen)(
            [sys.executable, "-c", _script(), *key],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        for key in CASES
    }
    deadline = time.monotonic() + HANG_S
    found = {}
    for key, process in started.items():
        try:
            out, err = process.communicate(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            out, err = process.communicate()
            found[key] = (None, f"hung: still running after {HANG_S:g} s\n{err[-3000:]}")
            continue
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        record = json.loads(lines[-1][len("RESULT ") :]) if lines and process.returncode == 0 else None
        found[key] = (record, f"exit {process.returncode}\n{err[-3000:]}")
    return found


@pytest.mark.parametrize("key", list(CASES), ids=[f"{case}, {first} first" for case, first in CASES])
def test_connect_raises_worker_error_within_op_timeout(outcomes, key):
    record, log = outcomes[key]
    assert record is not None, log
    task, reasons = CASES[key]
    assert record["tensorflow_first"] == (key[1] == "tensorflow"), record
    assert record["error"] == "WorkerError", record
    assert record["reason"] in reasons, record
    assert record["task"] == task, record
    if task is not None:
        assert f"worker {task} (/job:worker/replica:0/task:{task}" in record["message"]
    assert not record["still_connected"], "a failed connection must release this process"
    if key[1] == "tensorflow":  # else the bound starts once connect has imported TensorFlow
        assert record["seconds"] < OP_TIMEOUT_S, record
