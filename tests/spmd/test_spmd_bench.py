"""``allreduce-bench --spmd``: the sweep on local SPMD worker processes against
TensorFlow's ``CollectiveReduceV2``, Ctrl-C, and ``--tune`` per cluster shape read back
by ``spmd.all_reduce(spec="auto")``.

Each command runs in a child process with a timeout; the cluster is 2 workers with 1
or 2 devices each, the sizes tiny. Usage errors are in tests/unit/test_bench_cli.py.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from allreduce import spmd
from allreduce.measure.spmd_driver import PEER_NAME
from allreduce.selection.auto import resolve_with_reason
from allreduce.spmd.specs import MODE, cluster_devices, is_spmd_capable
from tests import forkserver
from tests.spmd import _tuned

pytestmark = pytest.mark.multiworker

TIMEOUT_S = 300
_INTERRUPTIBLE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from allreduce.bench.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _bench(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return forkserver.run([sys.executable, "-m", "allreduce.bench", *args], timeout=TIMEOUT_S, env=env)


@pytest.fixture
def env(tmp_path: Path) -> dict:
    return {**os.environ, "ALLREDUCE_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_the_sweep_is_exact_on_every_worker_with_the_peer_row(tmp_path, env):
    out = tmp_path / "spmd.json"
    args = ["--spmd", "--workers", "2", "--devices", "2", "--min-bytes", "4K", "--max-bytes", "64K"]
    args += ["--factor", "16", "--warmup", "0", "--iters", "2", "--specs", "xring,pscpu/pscpu"]
    done = _bench([*args, "--json", str(out), "--no-progress"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SPMD 2 workers x 2 CPU" in done.stdout.splitlines()[0]
    assert "All results exact and identical on every device" in done.stdout
    document = json.loads(out.read_text())
    assert document["ok"] and document["options"]["spmd"] is True
    rows = document["results"]
    assert [(r["case"], r["name"]) for r in rows] == [
        (case, name) for case in ("4KiB", "64KiB") for name in ("xring", "pscpu/pscpu", PEER_NAME)
    ]
    for row in rows:
        assert row["ok"] and row["wrong"] == 0 and row["replica_mismatch"] == 0, row
        assert row["num_devices"] == 4 and len(row["samples_us"]) == 2
    assert all(r["vs_best_peer"] for r in rows if r["kind"] == "ours")


def _has_row(seen: bytes) -> bool:
    return any(b"float32" in line and not line.startswith(b"#") for line in seen.splitlines()[:-1])


def _first_row(proc: subprocess.Popen, timeout_s: float) -> bytes:
    """The output up to and with the first table row (not the title)."""
    seen = b""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while not _has_row(seen) and time.monotonic() < deadline:
        if selector.select(timeout=max(deadline - time.monotonic(), 0)):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen


def _workers_of(pid: int) -> list[int]:
    """The SPMD worker processes whose command names ``pid`` as their parent."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"allreduce.spmd._child" in words and str(pid).encode() in words:
            found.append(int(entry.name))
    return found


def test_ctrl_c_exits_130_with_the_partial_json_and_leaves_no_worker(tmp_path, env):
    out = tmp_path / "partial.json"
    args = ["--spmd", "--workers", "2", "--devices", "1", "--min-bytes", "4K", "--max-bytes", "64M"]
    args += ["--factor", "4", "--warmup", "0", "--iters", "3", "--specs", "xring", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTIBLE, *args, "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        seen = _first_row(proc, TIMEOUT_S)
        assert _has_row(seen), seen
        assert _workers_of(proc.pid), "no worker process found while measuring"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"INTERRUPTED" in rest
    document = json.loads(out.read_text())
    assert document["interrupted"] and not document["ok"]
    assert document["results"] and all(r["ok"] for r in document["results"])
    assert document["results"][0]["case"] == "4KiB"
    time.sleep(1)
    assert _workers_of(proc.pid) == []


def test_tune_writes_an_spmd_tuning_that_auto_uses_on_that_shape_only(tmp_path, env, monkeypatch):
    specs = ["xring", "pscpu"]
    args = ["--spmd", "--workers", "2", "--devices", "1", "--tune", "--specs", ",".join(specs)]
    done = _bench([*args, "--min-bytes", "4K", "--max-bytes", "4K", "--tune-budget", "5"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = (tmp_path / "cache").glob("*.json")
    entry = json.loads(path.read_text())
    assert entry["key"]["mode"] == MODE and entry["key"]["workers"] == [1, 1]
    assert entry["spec"] in specs and sorted(entry["candidates"]) == sorted(specs)
    assert {s["spec"] for s in entry["samples"]} == set(specs)
    assert f"# tune: {entry['spec']!r}" in done.stdout

    monkeypatch.setenv("ALLREDUCE_CACHE_DIR", str(tmp_path / "cache"))
    fn = functools.partial(_tuned.auto_after_tuning, 1024, specs)
    for result in spmd.launch(fn, 2, timeout_s=TIMEOUT_S):
        assert result["cached"] and result["spec"] == entry["spec"]
        (line,) = [x for x in result["log"] if "spec='auto'" in x]
        assert f"{entry['spec']!r}, tuned for this workload ({path})" in line
        np.testing.assert_array_equal(result["sum"], np.arange(1024, dtype=np.float64) * 3)

    def reason(devices, mode=MODE):
        return resolve_with_reason(
            devices, [1024], "float32", tmp_path / "cache", mode=mode, keep=is_spmd_capable
        )[1]

    assert reason(cluster_devices(2, 1)).startswith("tuned for this workload")
    for other in (cluster_devices(3, 1), cluster_devices(2, 2)):
        assert reason(other).startswith("the cost model's choice"), other
    assert reason(cluster_devices(2, 1), mode=None).startswith("the cost model's choice")
