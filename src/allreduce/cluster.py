"""Local multi-worker clusters: TensorFlow servers on ``127.0.0.1`` and a watchdog.

:func:`local_cluster` starts ``workers`` ``tf.distribute.Server`` processes, each with
``devices_per_worker`` logical CPUs, and connects the calling process to them, so that
the same all-reduce code that runs on one machine runs across workers::

    with local_cluster(2, 2) as cluster:
        tensors = []
        for i, device in enumerate(d for worker in cluster.devices for d in worker):
            with tf.device(device):
                tensors.append(tf.fill([1024], float(i)))
        summed = cluster.run(allreduce.all_reduce, tensors, "pscpu/pscpu")

:meth:`LocalCluster.run` bounds a call: if a worker exits, stops (``SIGSTOP``) or stops
sending heartbeats, or the call outlives its deadline, it raises :class:`WorkerError`
naming the worker instead of hanging. The servers have no authentication and TensorFlow
binds them to every interface (``0.0.0.0``); run them on a trusted network only.
"""

from __future__ import annotations

import atexit
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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from allreduce._tf import tf
from allreduce._worker import JOB_NAME
from allreduce.runtime_hooks import context_changed

__all__ = [
    "DEFAULT_OP_TIMEOUT_S",
    "LocalCluster",
    "WorkerError",
    "WorkerStartError",
    "local_cluster",
]

log = logging.getLogger(__name__)

#: Default bound, in seconds, of one :meth:`LocalCluster.run` call.
DEFAULT_OP_TIMEOUT_S = 30.0
#: A worker whose heartbeat has been silent this long counts as not answering.
DEFAULT_UNRESPONSIVE_S = 5.0
DEFAULT_START_TIMEOUT_S = 120.0
LOOPBACK = "127.0.0.1"
#: The job name the calling process takes: its own devices keep their usual names.
CLIENT_JOB = "localhost"
_POLL_S = 0.05
_FAULT_GRACE_S = 2.0
_START_ATTEMPTS = 3
_STDERR_TAIL = 4000
_BIND_FAILURE = "Could not start gRPC server"

T = TypeVar("T")


class WorkerError(RuntimeError):
    """A worker of a cluster exited, stopped answering, or a call outlived its deadline.

    Attributes:
        task: the worker's task index, or ``None`` when no single worker is to blame
            (the call timed out while every worker still answered).
        reason: ``"exited"``, ``"stopped"``, ``"unresponsive"``, ``"timeout"`` or
            ``"start failed"``.
        stderr: the end of the worker's error output (may be empty).
    """

    def __init__(self, message: str, *, task: int | None, reason: str, stderr: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.reason = reason
        self.stderr = stderr


class WorkerStartError(WorkerError):
    """A worker process could not start; the message ends with its error output."""


def _free_ports(count: int) -> list[int]:
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


def _process_state(pid: int) -> str | None:
    """The one-letter state in ``/proc/PID/stat`` (``R``, ``S``, ``T``...), ``None`` if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0] if fields else None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class _Worker:
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
        command = [
            sys.executable,
            "-m",
            "allreduce._worker",
            json.dumps(cluster),
            str(task),
            str(cpus),
            str(os.getpid()),
        ]
        # Its own process group: Ctrl-C reaches the parent only, which then stops every worker.
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read_heartbeats, name=f"allreduce-worker{task}-heartbeat", daemon=True
        )
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
            return "exited", _describe_exit(code)
        if _process_state(self.pid) in ("T", "t"):
            return "stopped", "is stopped (SIGSTOP or a debugger) and does not answer"
        if self.ready.is_set():
            silent = time.monotonic() - self.last_beat
            if silent > unresponsive_s:
                return "unresponsive", f"has sent no heartbeat for {silent:.1f} s"
        return None

    def error(self, reason: str, description: str, cls: type[WorkerError] = WorkerError) -> WorkerError:
        stderr = self.stderr_tail()
        message = f"worker {self.task} ({self.device_prefix}, pid {self.pid}, {self.address}) {description}"
        if stderr.strip() and cls is WorkerStartError:
            message += f"; its error output:\n{stderr}"
        return cls(message, task=self.task, reason=reason, stderr=stderr)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def close(self) -> None:
        """Kills the process (stopped or not), reaps it and closes its pipes and files."""
        if self.process.poll() is None:
            self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()


class LocalCluster:
    """Worker processes on ``127.0.0.1``, made by :func:`local_cluster`.

    Attributes:
        devices: one list of full device names per worker, e.g.
            ``/job:worker/replica:0/task:1/device:CPU:0``.
        pids: the worker process ids, by task.
        addresses: ``host:port`` of each worker.
        op_timeout_s: the default deadline of :meth:`run`.
    """

    def __init__(
        self,
        workers: int,
        devices_per_worker: int,
        *,
        op_timeout_s: float,
        unresponsive_s: float,
        ports: Sequence[int] | None,
        start_timeout_s: float,
    ) -> None:
        self.devices_per_worker = devices_per_worker
        self.op_timeout_s = op_timeout_s
        self.unresponsive_s = unresponsive_s
        self._workers: list[_Worker] = []
        self._connected = False
        self._closed = False
        self._fault: WorkerError | None = None
        for attempt in range(1, _START_ATTEMPTS + 1):
            chosen = list(ports) if ports is not None else _free_ports(workers)
            try:
                self._start(chosen, start_timeout_s)
                break
            except BaseException as err:  # Ctrl-C while starting too: no worker is left behind
                self._stop_workers()
                # Ports picked here may be taken by another program before the servers bind them.
                taken = isinstance(err, WorkerStartError) and _BIND_FAILURE in err.stderr
                if not taken or ports is not None or attempt == _START_ATTEMPTS:
                    raise
                log.info("a worker port was taken meanwhile; retrying with new ports (%s)", err)

    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def addresses(self) -> list[str]:
        return [w.address for w in self._workers]

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    @property
    def devices(self) -> list[list[str]]:
        return [
            [f"{w.device_prefix}/device:CPU:{i}" for i in range(self.devices_per_worker)]
            for w in self._workers
        ]

    @property
    def cluster_spec(self) -> dict[str, list[str]]:
        """The ``{"worker": [...]}`` dictionary the servers were started with."""
        return {JOB_NAME: self.addresses}

    def _start(self, ports: Sequence[int], timeout_s: float) -> None:
        addresses = [f"{LOOPBACK}:{p}" for p in ports]
        spec = {JOB_NAME: addresses}
        self._workers = [_Worker(i, a, spec, self.devices_per_worker) for i, a in enumerate(addresses)]
        deadline = time.monotonic() + timeout_s
        while not all(w.ready.is_set() for w in self._workers):
            for w in self._workers:
                if not w.ready.is_set() and (w.eof.is_set() or w.process.poll() is not None):
                    w.process.wait(timeout=10)
                    how = _describe_exit(w.process.returncode)
                    raise w.error("start failed", f"could not start: it {how}", WorkerStartError)
            if time.monotonic() > deadline:
                late = next(w for w in self._workers if not w.ready.is_set())
                raise late.error("start failed", f"was not ready after {timeout_s:g} s", WorkerStartError)
            time.sleep(_POLL_S)
        log.info("started %d workers at %s", len(addresses), ", ".join(addresses))

    def kill(self, task: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` (default ``SIGKILL``) to worker ``task``, e.g. to test faults.

        With ``SIGKILL`` or ``SIGTERM`` it waits until the process is gone.

        Raises:
            ValueError: no such task.
        """
        if not isinstance(task, int) or not 0 <= task < len(self._workers):
            raise ValueError(f"task must be 0..{len(self._workers) - 1}, got {task!r}")
        worker = self._workers[task]
        worker.signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=10)

    def check(self) -> None:
        """Raises :class:`WorkerError` for the first worker that exited, stopped or is silent."""
        if self._fault is not None:
            raise self._fault
        for worker in self._workers:
            found = worker.fault(self.unresponsive_s)
            if found is not None:
                self._fault = worker.error(*found)
                raise self._fault

    def _first_fault(self, grace_s: float) -> WorkerError | None:
        deadline = time.monotonic() + grace_s
        while True:
            try:
                self.check()
            except WorkerError as err:
                return err
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None, **kwargs: Any) -> T:
        """Calls ``fn(*args, **kwargs)`` and returns its result, bounded by a watchdog.

        The call runs in a daemon thread while this thread watches the workers. After a
        fault the cluster is unusable: leave the ``with`` block (which kills every
        worker and so ends the abandoned call) and start a new cluster.

        Args:
            timeout_s: the most seconds to wait (default: the cluster's ``op_timeout_s``).

        Raises:
            WorkerError: a worker exited (``reason="exited"``), was stopped
                (``"stopped"``) or sent no heartbeat for ``unresponsive_s``
                (``"unresponsive"``) before or during the call, or the call took longer
                than ``timeout_s`` (``"timeout"``, ``task=None``). A TensorFlow error
                caused by a lost worker becomes this error's ``__cause__``.
            RuntimeError: the cluster is closed.
            Exception: whatever ``fn`` raises when every worker is healthy.
        """
        if self._closed:
            raise RuntimeError("this cluster is closed; start a new one with local_cluster(...)")
        limit = self.op_timeout_s if timeout_s is None else float(timeout_s)
        if limit <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.check()
        box: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as err:  # handed to the caller's thread
                box["error"] = err
            finally:
                done.set()

        thread = threading.Thread(target=call, name="allreduce-cluster-run", daemon=True)
        start = time.monotonic()
        thread.start()
        while not done.wait(_POLL_S):
            try:
                self.check()
            except WorkerError as fault:
                # The call usually fails soon after a worker exits: keep its error as the cause.
                if fault.reason == "exited" and done.wait(_FAULT_GRACE_S) and "error" in box:
                    raise fault from box["error"]
                raise
            if time.monotonic() - start > limit:
                fault = self._first_fault(0.0)
                if fault is not None:
                    raise fault
                self._fault = WorkerError(
                    f"the call did not finish within {limit:g} s, although every worker still answers",
                    task=None,
                    reason="timeout",
                )
                raise self._fault
        if "error" not in box:
            return box["value"]
        err = box["error"]
        if isinstance(err, tf.errors.OpError):
            # A lost worker shows up as a TensorFlow error first; name the worker.
            fault = self._first_fault(_FAULT_GRACE_S)
            if fault is not None:
                raise fault from err
        raise err

    def _connect(self, timeout_s: float) -> None:
        spec = dict(self.cluster_spec)
        spec[CLIENT_JOB] = [f"{LOOPBACK}:{_free_ports(1)[0]}"]
        self.run(
            tf.config.experimental_connect_to_cluster,
            tf.train.ClusterSpec(spec),
            job_name=CLIENT_JOB,
            timeout_s=timeout_s,
        )
        self._connected = True
        context_changed()
        known = {d.name for d in tf.config.list_logical_devices()}
        missing = [d for worker in self.devices for d in worker if d not in known]
        if missing:
            raise WorkerError(
                f"connected, but devices {missing} are not visible", task=None, reason="start failed"
            )

    def _disconnect(self) -> None:
        # Connecting to a cluster of this process alone drops the remote devices while
        # the workers still answer, so that TensorFlow does not call them once they are gone.
        only_self = tf.train.ClusterSpec({CLIENT_JOB: [f"{LOOPBACK}:{_free_ports(1)[0]}"]})
        thread = threading.Thread(
            target=tf.config.experimental_connect_to_cluster,
            args=(only_self,),
            kwargs={"job_name": CLIENT_JOB},
            daemon=True,
        )
        thread.start()
        thread.join(10.0)
        if thread.is_alive():
            log.warning("disconnecting from the cluster did not finish within 10 s")
        context_changed()

    def _stop_workers(self) -> None:
        for worker in self._workers:
            worker.close()

    def close(self) -> None:
        """Stops every worker and disconnects; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        _open_clusters.discard(self)
        try:
            if self._connected:
                healthy = self._first_fault(0.0) is None and self._fault is None
                if not healthy:
                    self._stop_workers()  # a stopped worker would block the disconnect
                self._disconnect()
        finally:
            self._stop_workers()
            log.info("stopped workers %s", self.pids)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        size = f"{self.workers} workers x {self.devices_per_worker} CPUs"
        return f"LocalCluster({size}, {state}, {self.addresses})"


_open_clusters: set[LocalCluster] = set()


@atexit.register
def _close_all() -> None:
    for cluster in list(_open_clusters):
        cluster.close()


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


@contextlib.contextmanager
def local_cluster(
    workers: int,
    devices_per_worker: int,
    *,
    op_timeout_s: float = DEFAULT_OP_TIMEOUT_S,
    unresponsive_s: float = DEFAULT_UNRESPONSIVE_S,
    connect: bool = True,
    ports: Sequence[int] | None = None,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> Iterator[LocalCluster]:
    """Starts ``workers`` TensorFlow servers on ``127.0.0.1`` and connects this process.

    Each worker is a child process running ``tf.distribute.Server`` for
    ``/job:worker/task:N`` with ``devices_per_worker`` logical CPUs. The calling process
    joins as job ``localhost`` (its own devices keep their names), so worker devices
    can be used eagerly and in ``tf.function``. On leaving the block, by any path, the
    workers are killed and reaped; a worker also exits by itself when this process dies.
    A process can be connected to one cluster at a time; connecting changes its eager
    context for good (see ``docs/multiworker.md``).

    Args:
        workers: the number of worker processes.
        devices_per_worker: logical CPUs per worker.
        op_timeout_s: the default deadline of :meth:`LocalCluster.run`.
        unresponsive_s: how long a silent heartbeat means a worker stopped answering.
        connect: ``False`` only starts the servers (connect yourself, e.g. under
            another job name).
        ports: one port per worker; by default free ports are picked.
        start_timeout_s: the most seconds to wait for the servers and the connection.

    Yields:
        The :class:`LocalCluster`.

    Raises:
        TypeError, ValueError: bad counts, ports or timeouts.
        WorkerStartError: a worker could not start; the message holds its stderr.
        WorkerError: a worker failed while connecting.
        RuntimeError: this process is already connected to another local cluster.
    """
    _check_count("workers", workers)
    _check_count("devices_per_worker", devices_per_worker)
    op_timeout_s = _check_seconds("op_timeout_s", op_timeout_s)
    unresponsive_s = _check_seconds("unresponsive_s", unresponsive_s)
    start_timeout_s = _check_seconds("start_timeout_s", start_timeout_s)
    if ports is not None:
        ports = [int(p) for p in ports]
        if len(ports) != workers or len(set(ports)) != workers or not all(0 < p < 65536 for p in ports):
            raise ValueError(f"ports must be {workers} distinct port numbers, got {ports!r}")
    if connect and any(c._connected for c in _open_clusters):
        raise RuntimeError("this process is already connected to an open local_cluster; close it first")
    cluster = LocalCluster(
        workers,
        devices_per_worker,
        op_timeout_s=op_timeout_s,
        unresponsive_s=unresponsive_s,
        ports=ports,
        start_timeout_s=start_timeout_s,
    )
    _open_clusters.add(cluster)
    try:
        if connect:
            cluster._connect(start_timeout_s)
        yield cluster
    finally:
        cluster.close()
