"""Health of a cluster's workers, checked in the background for the cluster's whole life.

A :class:`Watchdog` thread asks each worker's probe every 50 ms whether it has failed.
The first failure becomes the cluster's fault (a :class:`WorkerError` naming the worker);
a worker found stopped or silent is *fenced*, killed where this process can kill it, so
that every call waiting on it, inside :meth:`Cluster.run` or not, fails at once instead
of hanging (TensorFlow itself would wait forever on a frozen worker).

Two kinds of probes:

- :class:`ProcessProbe`, for workers this process started: the process exited, is
  stopped (``T`` in ``/proc/PID/stat``), or its stdout heartbeat is silent. It can fence.
- :class:`NetworkProbe`, for workers elsewhere: a ``GetStatus`` call to the worker's
  gRPC server, with its own deadline, every :data:`HEARTBEAT_S`; the worker is
  unresponsive (or unreachable) when none has succeeded for ``unresponsive_s``. It
  cannot fence: there is no process to kill.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from allreduce.cluster.errors import WorkerError
from allreduce.cluster.supervisor import WorkerProcess
from allreduce.cluster.threads import daemon_thread

__all__ = ["HEARTBEAT_S", "NetworkProbe", "Probe", "ProcessProbe", "Watchdog"]

log = logging.getLogger("allreduce.cluster")

POLL_S = 0.05
#: How often a :class:`NetworkProbe` sends a heartbeat.
HEARTBEAT_S = 0.5
_JOIN_S = 10.0
_GET_STATUS = "/tensorflow.WorkerService/GetStatus"


class Probe(Protocol):
    """The health of one worker."""

    task: int

    def fault(self) -> tuple[str, str] | None:
        """``(reason, description)`` once the worker has failed, else ``None``; never blocks."""

    def fence(self) -> bool:
        """Makes calls waiting on the worker fail; whether it could."""

    def error(self, reason: str, description: str) -> WorkerError:
        """A :class:`WorkerError` naming the worker."""

    def close(self) -> None:
        """Releases what the probe holds."""


class ProcessProbe:
    """A worker process of this process: exited, stopped, or silent for ``unresponsive_s``."""

    def __init__(self, worker: WorkerProcess, unresponsive_s: float) -> None:
        self.task = worker.task
        self._worker = worker
        self._unresponsive_s = unresponsive_s

    def fault(self) -> tuple[str, str] | None:
        return self._worker.fault(self._unresponsive_s)

    def fence(self) -> bool:
        self._worker.fence()
        return True

    def error(self, reason: str, description: str) -> WorkerError:
        return self._worker.error(reason, description)

    def close(self) -> None:
        pass


class NetworkProbe:
    """A worker reached over the network: its heartbeat has not succeeded for ``unresponsive_s``."""

    def __init__(self, task: int, job: str, address: str, unresponsive_s: float) -> None:
        import grpc  # installed with TensorFlow

        self.task = task
        self.name = f"/job:{job}/replica:0/task:{task}"
        self.address = address
        self._grpc = grpc
        self._unresponsive_s = unresponsive_s
        self._channel = grpc.insecure_channel(address)
        self._get_status = self._channel.unary_unary(_GET_STATUS)
        self._pending: Any = None
        self._sent = float("-inf")
        self._last_ok = time.monotonic()
        self._last_error: Any = None
        #: Whether a heartbeat has ever succeeded.
        self.answered = False

    def _collect(self, now: float) -> None:
        if self._pending is not None and self._pending.done():
            try:
                self._pending.result()
                self._last_ok, self._last_error = now, None
                self.answered = True
            except self._grpc.RpcError as err:
                self._last_error = err
            self._pending = None
        if self._pending is None and now - self._sent >= HEARTBEAT_S:
            self._pending = self._get_status.future(b"", timeout=self._unresponsive_s)
            self._sent = now

    def fault(self) -> tuple[str, str] | None:
        now = time.monotonic()
        self._collect(now)
        silent = now - self._last_ok
        if silent <= self._unresponsive_s:
            return None
        err = self._last_error
        if err is not None and err.code() == self._grpc.StatusCode.UNAVAILABLE:
            return "unreachable", f"cannot be reached for {silent:.1f} s ({err.details()})"
        return "unresponsive", f"has not answered a heartbeat for {silent:.1f} s"

    def fence(self) -> bool:
        return False

    def error(self, reason: str, description: str) -> WorkerError:
        return WorkerError(
            f"worker {self.task} ({self.name}, {self.address}) {description}", task=self.task, reason=reason
        )

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._channel.close()


class Watchdog:
    """Checks ``probes`` every 50 ms in a daemon thread from :meth:`start` to :meth:`stop`.

    Args:
        grace_s: how long to wait for a probe to name the worker behind a TensorFlow
            error (a lost connection shows up in a call before a probe sees it).
    """

    def __init__(self, probes: Sequence[Probe], *, grace_s: float, name: str) -> None:
        self.grace_s = grace_s
        self._probes = list(probes)
        self._lock = threading.Lock()
        self._fault: WorkerError | None = None
        self._faulted = threading.Event()
        self._fenced: set[int] = set()
        self._stop = threading.Event()
        self._thread = daemon_thread(self._loop, name)

    @property
    def fault(self) -> WorkerError | None:
        """The first failure found, if any."""
        return self._fault

    def start(self) -> None:
        self._thread.start()

    def scan(self) -> WorkerError | None:
        """Asks every probe now, fences each worker found failed, returns the first fault."""
        with self._lock:
            for probe in self._probes:
                if probe.task in self._fenced:
                    continue
                found = probe.fault()
                if found is not None:
                    self._fail(probe, *found)
            return self._fault

    def _fail(self, probe: Probe, reason: str, description: str) -> None:
        if reason != "exited" and probe.fence():
            description += "; killed it, so that calls waiting on it fail"
        self._fenced.add(probe.task)
        error = probe.error(reason, description)
        log.warning("%s", error)
        if self._fault is None:
            self._fault = error
            self._faulted.set()

    def wait(self, timeout_s: float) -> WorkerError | None:
        """Waits up to ``timeout_s`` for a fault; returns it, or ``None``."""
        deadline = time.monotonic() + timeout_s
        while self._fault is None and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self._thread.is_alive():  # not started, or stopped: look directly
                self.scan()
            self._faulted.wait(min(left, POLL_S))
        return self._fault

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.scan()
            except Exception:  # the watchdog must outlive a probe's surprise
                log.exception("checking the workers failed")

    def stop(self) -> None:
        """Ends the thread and releases the probes; safe to call more than once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(_JOIN_S)
        with self._lock:
            for probe in self._probes:
                probe.close()
            self._probes = []
