"""Worker processes of a local cluster: start (with retries), heartbeats, signals, clean-up.

Pure Python: nothing here imports TensorFlow. Each worker runs :mod:`allreduce.cluster.worker`
in its own process group, writes a heartbeat line to its stdout pipe, and dies with the
thread that started it (see :mod:`allreduce.cluster.worker`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from allreduce.cluster.errors import WorkerError, WorkerStartError
from allreduce.cluster.spawn import python_process
from allreduce.cluster.threads import daemon_thread
from allreduce.cluster.worker import JOB_NAME
from allreduce.core.validation import check_int

__all__ = ["LOOPBACK", "Reaper", "Supervisor", "WorkerProcess", "descendants", "free_ports"]

log = logging.getLogger("allreduce.cluster")

LOOPBACK = "127.0.0.1"
_POLL_S = 0.05
#: Attempts to start workers on ports chosen here, when another program took one meanwhile.
START_ATTEMPTS = 3
_STDERR_TAIL = 4000
_REAP_S = 10.0
#: What TensorFlow says when a server cannot bind its port.
BIND_FAILURE = "Could not start gRPC server"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free on the loopback interface right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def process_state(pid: int) -> str | None:
    """The one-letter state in ``/proc/PID/stat`` (``R``, ``S``, ``T``...), ``None`` if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0] if fields else None


def describe_exit(code: int) -> str:
    """``"was killed by SIGKILL"`` or ``"exited with status 3"``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def descendants(word: bytes) -> list[int]:
    """This process's descendants whose command line contains ``word`` (Linux; elsewhere none)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{name}/stat") as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as f:
                if word in f.read():
                    found.append(child)
    return found


#: Kills the given processes (those whose command line still names Ray) once its pipe
#: closes without ``done``: when the process that started it died.
_REAPER = """
import os, signal, sys
if sys.stdin.buffer.read() != b"done":
    for pid in map(int, sys.argv[1:]):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ray" in f.read():
                    os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


class Reaper:
    """A child process that kills ``pids`` if this process dies before :meth:`dismiss`."""

    def __init__(self, pids: Sequence[int]) -> None:
        command = [sys.executable, "-c", _REAPER, *map(str, pids)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, start_new_session=True)

    def dismiss(self) -> None:
        """Lets the reaper exit without killing anything."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self._process.communicate(b"done", timeout=_REAP_S)


class WorkerProcess:
    """One server process, its heartbeat reader and its error output."""

    def __init__(self, task: int, address: str, cluster: dict[str, list[str]], cpus: int) -> None:
        self.task = task
        self.address = address
        self.ready = threading.Event()
        self.eof = threading.Event()
        self.last_beat = time.monotonic()
        # Closed by close(): it outlives this method, so no context manager.
        self._stderr = tempfile.TemporaryFile(prefix=f"allreduce-worker{task}-")  # noqa: SIM115
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        args = [json.dumps(cluster), str(task), str(cpus), str(os.getpid())]
        self.process = python_process(
            "allreduce.cluster.worker",
            args,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._reader = daemon_thread(self._read_heartbeats, f"allreduce-worker{task}-heartbeat")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def device_prefix(self) -> str:
        return f"/job:{JOB_NAME}/replica:0/task:{self.task}"

    def _read_heartbeats(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        for line in iter(stream.readline, b""):
            self.last_beat = time.monotonic()
            if line.startswith(b"ready"):
                self.ready.set()
        self.eof.set()

    def stderr_tail(self) -> str:
        """The last few thousand characters the worker wrote to stderr."""
        try:
            self._stderr.flush()
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - _STDERR_TAIL))
            return self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def fault(self, unresponsive_s: float) -> tuple[str, str] | None:
        """``(reason, description)`` if the worker exited, is stopped or is silent, else ``None``."""
        code = self.process.poll()
        if code is not None:
            return "exited", describe_exit(code)
        if process_state(self.pid) in ("T", "t"):
            return "stopped", "is stopped (SIGSTOP or a debugger) and does not answer"
        if self.ready.is_set():
            silent = time.monotonic() - self.last_beat
            if silent > unresponsive_s:
                return "unresponsive", f"has sent no heartbeat for {silent:.1f} s"
        return None

    def error(self, reason: str, description: str, cls: type[WorkerError] = WorkerError) -> WorkerError:
        """A :class:`WorkerError` naming this worker; a start error carries its stderr."""
        stderr = self.stderr_tail()
        message = f"worker {self.task} ({self.device_prefix}, pid {self.pid}, {self.address}) {description}"
        if stderr.strip() and cls is WorkerStartError:
            message += f"; its error output:\n{stderr}"
        return cls(message, task=self.task, reason=reason, stderr=stderr)

    def signal(self, sig: int) -> None:
        """Sends ``sig`` unless the process has already been reaped (its pid may be reused)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    def fence(self) -> None:
        """Kills the worker, so that every call waiting on it fails at once."""
        self.signal(signal.SIGKILL)

    def close(self) -> None:
        """Kills the process (stopped or not), reaps it and closes its pipes and files."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=_REAP_S)
        self._reader.join(_REAP_S)  # the pipe ends with the process
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()


class Supervisor:
    """Starts ``workers`` server processes on ``127.0.0.1`` and owns them until :meth:`close`.

    Raises (from the constructor):
        WorkerStartError: a worker could not start; ports it picked itself that another
            program took meanwhile are retried with new ones (up to 3 attempts).
    """

    def __init__(
        self, workers: int, devices_per_worker: int, ports: Sequence[int] | None, timeout_s: float
    ) -> None:
        self.devices_per_worker = devices_per_worker
        self.workers: list[WorkerProcess] = []
        for attempt in range(1, START_ATTEMPTS + 1):
            chosen = list(ports) if ports is not None else free_ports(workers)
            try:
                self._start(chosen, timeout_s)
                return
            except BaseException as err:  # Ctrl-C while starting too: no worker is left behind
                self.close()
                taken = isinstance(err, WorkerStartError) and BIND_FAILURE in err.stderr
                if not taken or ports is not None or attempt == START_ATTEMPTS:
                    raise
                log.info("a worker port was taken meanwhile; retrying with new ports (%s)", err)

    @property
    def addresses(self) -> list[str]:
        return [w.address for w in self.workers]

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def _start(self, ports: Sequence[int], timeout_s: float) -> None:
        addresses = [f"{LOOPBACK}:{p}" for p in ports]
        spec = {JOB_NAME: addresses}
        cpus = self.devices_per_worker
        self.workers = [WorkerProcess(i, a, spec, cpus) for i, a in enumerate(addresses)]
        deadline = time.monotonic() + timeout_s
        while not all(w.ready.is_set() for w in self.workers):
            for w in self.workers:
                if not w.ready.is_set() and (w.eof.is_set() or w.process.poll() is not None):
                    w.process.wait(timeout=_REAP_S)
                    how = describe_exit(w.process.returncode)
                    raise w.error("start failed", f"could not start: it {how}", WorkerStartError)
            if time.monotonic() > deadline:
                late = next(w for w in self.workers if not w.ready.is_set())
                raise late.error("start failed", f"was not ready after {timeout_s:g} s", WorkerStartError)
            time.sleep(_POLL_S)
        log.info("started %d workers at %s", len(addresses), ", ".join(addresses))

    def kill(self, task: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to worker ``task``; with ``SIGKILL`` or ``SIGTERM`` waits until it is gone.

        Raises:
            TypeError: ``task`` is not an int.
            ValueError: no such task.
        """
        check_int("task", task, minimum=0, maximum=len(self.workers) - 1)
        worker = self.workers[task]
        worker.signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=_REAP_S)

    def close(self) -> None:
        """Kills and reaps every worker; safe to call more than once."""
        for worker in self.workers:
            worker.close()
