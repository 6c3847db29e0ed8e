"""Ctrl-C stops ``allreduce-bench`` with status 130 and the partial JSON, wherever it lands.

Python raises ``KeyboardInterrupt`` wherever the main thread is when ``SIGINT``
arrives; inside a finalizer (TensorFlow's ``AtomicFunction.__del__``, run by the
garbage collector) it is printed as "Exception ignored" and dropped, and the run went
on. The finalizer tests send ``SIGINT`` from inside a finalizer, so that the
interrupt lands there every time; the others interrupt real runs at several points,
in one process and across two workers.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import forkserver

# Runs the command with Python's own SIGINT handler (a shell may start background jobs
# with SIGINT ignored). With BOMB set, an object whose finalizer sends SIGINT to this
# process and lets the handler run inside the finalizer is dropped once, at that point:
# "setup" once the devices are made, "measuring" once the first case is done.
_RUNNER = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from allreduce.bench import session
from allreduce.bench.cli import main

class Bomb:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):  # the handler runs here, inside the finalizer
            pass

def drop_a_bomb(real):
    armed = [True]
    def call(*args, **kwargs):
        out = real(*args, **kwargs)
        if armed.pop() if armed else False:
            Bomb()
        return out
    return call

where = os.environ.get("BOMB")
if where == "setup":
    session._enter_devices = drop_a_bomb(session._enter_devices)
elif where == "measuring":
    session.run_case = drop_a_bomb(session.run_case)
sys.exit(main(sys.argv[1:]))
"""

# 1 KiB is measured in a fraction of a second; the whole sweep takes far longer.
_LONG_SWEEP = ["--min-bytes", "1K", "--max-bytes", "16M", "--factor", "4", "--warmup", "0", "--no-progress"]


def _start(argv: list[str], bomb: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if bomb:
        env["BOMB"] = bomb
    # The command is a fork of a process that has imported TensorFlow; its workers are real.
    return forkserver.popen(
        [sys.executable, "-c", _RUNNER, *argv],
        fork_workers=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _read_until(proc: subprocess.Popen, wanted: str, timeout_s: float) -> bytes:
    """Reads stdout until ``wanted`` ("header": the title line; "row": a table row) has
    arrived; fails if the run ends or the time runs out first."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            assert chunk, f"the run ended before its {wanted}: {seen.decode()}"
            seen += chunk
            lines = seen.split(b"\n")[:-1]
            if wanted == "header" and any(line.startswith(b"# allreduce-bench:") for line in lines):
                return seen
            if wanted == "row" and any(line and not line.startswith(b"#") for line in lines):
                return seen
        pytest.fail(f"no {wanted} within {timeout_s} s: {seen.decode()}")
    finally:
        selector.close()


def _finish(proc: subprocess.Popen, seen: bytes = b"", timeout_s: float = 180) -> tuple[str, str]:
    try:
        rest, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return (seen + rest).decode(), err.decode()


def _check_interrupted(code: int, out: str, err: str, report: Path) -> dict:
    """Status 130, no traceback, and a JSON that holds exactly the rows of the table."""
    assert code == 130, f"status {code}\n{out}\n{err}"
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "INTERRUPTED" in out, out
    document = json.loads(report.read_text())
    assert document["interrupted"] is True and document["ok"] is False
    rows = [line.split() for line in out.splitlines() if line.strip() and not line.startswith("#")]
    assert [(r["size_bytes"], r["name"]) for r in document["results"]] == [(int(r[0]), r[3]) for r in rows]
    return document


@pytest.mark.parametrize("bomb", ["setup", "measuring"])
def test_an_interrupt_inside_a_finalizer_still_stops_the_run(tmp_path: Path, bomb: str) -> None:
    report = tmp_path / "r.json"
    argv = ["--specs", "pscpu", "--peers", "numpy", "--iters", "2", *_LONG_SWEEP, "--json", str(report)]
    proc = _start(argv, bomb=bomb)
    out, err = _finish(proc)
    document = _check_interrupted(proc.returncode, out, err, report)
    cases = {r["case"] for r in document["results"]}
    assert cases == (set() if bomb == "setup" else {"1KiB"})


# Where the interrupt lands: while TensorFlow loads (a fixed delay from the start), or a
# delay after the title line or after the first row.
_POINTS = [("start", 2.0), ("header", 0.3), ("row", 0.0), ("row", 1.0)]


def _interrupt_at(argv: list[str], point: tuple[str, float], report: Path) -> dict:
    proc = _start([*argv, "--json", str(report)])
    seen = b""
    try:
        after, delay = point
        if after != "start":
            seen = _read_until(proc, after, timeout_s=180)
        time.sleep(delay)
        assert proc.poll() is None, "the run ended before the interrupt"
        proc.send_signal(signal.SIGINT)
    finally:
        out, err = _finish(proc, seen)
    return _check_interrupted(proc.returncode, out, err, report)


@pytest.mark.parametrize("point", _POINTS, ids=lambda p: f"{p[0]}+{p[1]}s")
def test_ctrl_c_in_one_process_exits_130_with_the_partial_json(tmp_path: Path, point) -> None:
    argv = ["--specs", "pscpu,xring", "--peers", "numpy", "--iters", "50", *_LONG_SWEEP]
    document = _interrupt_at(argv, point, tmp_path / "r.json")
    assert all(r["wrong"] == 0 and len(r["samples_us"]) == 50 for r in document["results"])


@pytest.mark.multiworker
@pytest.mark.slow
@pytest.mark.parametrize("point", [("header", 0.0), ("row", 0.5)], ids=lambda p: f"{p[0]}+{p[1]}s")
def test_ctrl_c_across_workers_exits_130_with_the_partial_json(tmp_path: Path, point) -> None:
    argv = ["--workers", "2", "--devices", "2", "--specs", "pscpu/pscpu,xring", "--no-peers"]
    document = _interrupt_at([*argv, "--iters", "20", *_LONG_SWEEP], point, tmp_path / "r.json")
    assert all(len(d) and "/job:worker" in d for d in document["devices"])
