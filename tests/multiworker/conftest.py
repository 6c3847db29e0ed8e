"""Shared code of the multi-worker tests: the client process and checks on child processes.

Tests that connect to a cluster run ``_client.py`` in a process of its own (connecting
changes a process's eager context for good, and this pytest process has its own 8
logical CPUs): a fork of the test process's fork server (``tests/forkserver.py``), whose
cluster workers are forks of it too. Under coverage, each of them measures itself with
the same settings, and pytest-cov combines their data with this process's.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests import forkserver

CLIENT = Path(__file__).with_name("_client.py")
ROOT = Path(__file__).resolve().parents[2]


def _client_command(scenario: str, args: dict, out_dir: Path, client: Path = CLIENT) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [sys.executable, str(client), scenario, json.dumps(args), str(out_dir)]


def _client_env() -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))


def _read_result(scenario: str, out_dir: Path, returncode: int, stderr: str) -> tuple[dict, dict]:
    result = out_dir / "result.json"
    if returncode != 0 or not result.exists():
        pytest.fail(f"client {scenario} failed with status {returncode}; stderr:\n{stderr[-8000:]}")
    manifest = json.loads(result.read_text())
    if manifest.get("fatal"):
        pytest.fail(f"client {scenario} failed:\n{manifest['fatal']}\nstderr:\n{stderr[-4000:]}")
    with np.load(out_dir / "arrays.npz") as data:
        arrays = {key: data[key] for key in data.files}
    return manifest, arrays


def run_client(
    scenario: str, args: dict, out_dir: Path, timeout_s: float, client: Path = CLIENT
) -> tuple[dict, dict]:
    """Runs one scenario of ``client`` (a script like ``_client.py``); returns its manifest and arrays.

    Fails the test (with the client's output) if the client does not finish in
    ``timeout_s`` seconds, dies (a crash shows as a negative status), or writes no result.
    """
    command = _client_command(scenario, args, out_dir, client)
    try:
        done = forkserver.run(command, cwd=ROOT, env=_client_env(), timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"client {scenario} did not finish in {timeout_s} s; stderr:\n{err.stderr}")
    return _read_result(scenario, out_dir, done.returncode, done.stderr)


class InteractiveClient:
    """A client scenario that reports steps on its stdout and waits for ``go`` on its stdin."""

    def __init__(self, scenario: str, args: dict, out_dir: Path) -> None:
        self.scenario, self.out_dir = scenario, out_dir
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by finish()
        self.process = forkserver.popen(
            _client_command(scenario, args, out_dir),
            cwd=ROOT,
            env=_client_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-8000:]

    def expect(self, line: str, timeout_s: float) -> None:
        """Waits for the client to write ``line``; fails the test if it does not in time."""
        stdout = self.process.stdout
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        got = stdout.readline().strip() if ready else None
        if got != line:
            self.process.kill()
            stderr = self._stderr_text()
            pytest.fail(f"client {self.scenario}: expected {line!r}, got {got!r}; stderr:\n{stderr}")

    def go(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def finish(self, timeout_s: float) -> tuple[dict, dict]:
        """Waits for the client to exit; returns its manifest and arrays."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            stderr = self._stderr_text()
            pytest.fail(f"client {self.scenario} did not exit in {timeout_s} s; stderr:\n{stderr}")
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                stream.close()
        stderr = self._stderr_text()
        self._stderr.close()
        return _read_result(self.scenario, self.out_dir, self.process.returncode, stderr)

    def kill(self) -> None:
        """Ends the client if it is still running (after a failed step)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def process_gone(pid: int) -> bool:
    """Whether the process has exited: no such pid, or only a zombie left for its parent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def wait_gone(pids: list[int], bound_s: float) -> list[int]:
    """Waits up to ``bound_s`` for the processes to vanish; returns those still there."""
    deadline = time.monotonic() + bound_s
    left = [p for p in pids if not process_gone(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if not process_gone(p)]
    return left


WORKER_COMMAND = Path(sys.executable).with_name("allreduce-worker")


class WorkerCommand:
    """One ``allreduce-worker`` process, in its own session, its stderr in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with open(log, "wb") as stderr:
            self.process = forkserver.popen(
                [str(WORKER_COMMAND), *args],
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout_s: float) -> str:
        """Waits until the worker logged its devices; fails the test if it exits or does not in time."""
        deadline = time.monotonic() + timeout_s
        while "devices: " not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"allreduce-worker did not start in {timeout_s} s:\n{self.text()[-4000:]}")
            time.sleep(0.1)
        return self.text()

    def wait(self, timeout_s: float) -> int:
        """The exit status; fails the test if the worker is still running after ``timeout_s``."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"allreduce-worker did not exit in {timeout_s} s:\n{self.text()[-4000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
