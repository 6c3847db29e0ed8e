"""The part every cluster shares, and the contract of a cluster backend.

:class:`Cluster` gives every backend a bounded :meth:`Cluster.run`, :meth:`Cluster.check`,
its devices (:attr:`Cluster.devices`, :meth:`Cluster.devices_of`), and connecting this
process to the workers and back. A backend (:class:`allreduce.cluster.LocalCluster`
starts processes, :class:`allreduce.cluster.RemoteCluster` joins hand-started servers,
:class:`allreduce.cluster.ray_backend.RayCluster` runs Ray actors) is one module that
subclasses it and does four things:

1. **start** the workers (or find them) and report their addresses: the subclass passes
   ``{job: [address, ...]}`` to ``Cluster.__init__`` (:attr:`Cluster.cluster_spec`),
   then calls :meth:`Cluster._connect` (it may override :meth:`Cluster._await_workers`
   to wait until every worker answers);
2. **probe health**: it hands :meth:`Cluster._watch` a
   :class:`~allreduce.cluster.watchdog.Watchdog` with one probe per worker, whose
   ``fault()`` says why a worker is gone (``exited``, ``unresponsive``, ``unreachable``);
3. **fence** a worker the watchdog found silent (the probe's ``fence()``, and
   ``kill(task)``), so that calls waiting on it fail instead of hanging, and
   :meth:`Cluster._fence_all` after a fault;
4. **stop**: :meth:`Cluster._release` frees what it holds once this process has left.

Nothing above the backends knows which one it holds. Every open cluster is closed when
the interpreter exits. TensorFlow is imported only to connect, so that a process that
only serves workers (``connect=False``) does without it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from allreduce.cluster import connection as _connection
from allreduce.cluster.errors import WorkerError
from allreduce.cluster.threads import daemon_thread
from allreduce.cluster.watchdog import Watchdog
from allreduce.core.validation import check_choice, check_seconds

__all__ = ["DEVICE_TYPES", "Cluster"]

#: The device types :meth:`Cluster.devices_of` selects.
DEVICE_TYPES = ("CPU", "GPU")

log = logging.getLogger("allreduce.cluster")

_POLL_S = 0.05
_DISCONNECT_S = 10.0
#: What a failed connection leaves of its deadline to close (0.25 s was seen to fall short
#: by up to 30 ms on a loaded 2-core machine).
_CLOSE_S = 0.5
#: How long a call gets to fail after its worker did, so that its error becomes the cause.
_CAUSE_S = 0.5

T = TypeVar("T")


class _Call:
    """``fn(*args, **kwargs)`` in a daemon thread; its value or error once ``done``."""

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self.thread = daemon_thread(self._run, "allreduce-cluster-run")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.value = self._fn(*self._args, **self._kwargs)
        except BaseException as err:  # handed to the caller's thread
            self.error = err
        finally:
            self.done.set()


class Cluster:
    """What every cluster offers: its devices, a bounded :meth:`run`, :meth:`check`, :meth:`close`.

    Attributes:
        op_timeout_s: the default deadline of :meth:`run`.
        unresponsive_s: how long a silent heartbeat means a worker stopped answering.
    """

    def __init__(self, jobs: dict[str, list[str]], job: str, op_timeout_s: float, unresponsive_s: float):
        self.op_timeout_s = op_timeout_s
        self.unresponsive_s = unresponsive_s
        self._jobs = jobs
        self._job = job
        self._devices: list[list[str]] = [[] for _ in jobs[job]]
        self._watchdog: Watchdog | None = None
        self._fault: WorkerError | None = None
        self._connected = False
        self._attached = False
        #: The last call :meth:`run` gave up on while it still ran.
        self._unfinished: _Call | None = None
        self._closed = False
        _open_clusters.add(self)  # closed at exit if still open

    @property
    def devices(self) -> list[list[str]]:
        """One list of full device names per worker, e.g. ``/job:worker/replica:0/task:1/device:CPU:0``."""
        return [list(worker) for worker in self._devices]

    def devices_of(self, device_type: str) -> list[list[str]]:
        """The devices of one type, ``"CPU"`` or ``"GPU"``, one list per worker (empty
        for a worker without one), e.g. a GPU host's GPUs without its CPU.

        Raises:
            TypeError: ``device_type`` is not a str.
            ValueError: ``device_type`` is not one of :data:`DEVICE_TYPES`.
        """
        check_choice("device_type", device_type, DEVICE_TYPES)
        return [[d for d in worker if _device_type(d) == device_type] for worker in self._devices]

    @property
    def cluster_spec(self) -> dict[str, list[str]]:
        """The ``{job: [host:port, ...]}`` dictionary of the servers."""
        return {name: list(addresses) for name, addresses in self._jobs.items()}

    def _watch(self, watchdog: Watchdog) -> None:
        self._watchdog = watchdog
        watchdog.start()

    def check(self) -> None:
        """Raises the cluster's fault, if a worker exited, stopped, went silent or a call timed out.

        Raises:
            WorkerError: the first fault found; it is final for this cluster.
        """
        if self._fault is None and self._watchdog is not None:
            self._fault = self._watchdog.scan()
        if self._fault is not None:
            raise self._fault

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None, **kwargs: Any) -> T:
        """Calls ``fn(*args, **kwargs)`` in a daemon thread and returns its result, bounded.

        The calling thread waits for the call, the watchdog's verdict and the deadline.
        After a fault the cluster refuses further calls: leave the ``with`` block.

        Args:
            timeout_s: the most seconds to wait (default: the cluster's ``op_timeout_s``).

        Raises:
            WorkerError: a worker exited (``reason="exited"``), was stopped
                (``"stopped"``), did not answer its heartbeat for ``unresponsive_s``
                (``"unresponsive"``, or ``"unreachable"`` for a refused connection), or
                the call took longer than ``timeout_s`` (``"timeout"``, ``task=None``).
                A TensorFlow error caused by a lost worker becomes its ``__cause__``.
            RuntimeError: the cluster is closed.
            TypeError, ValueError: ``timeout_s`` is not a positive number of seconds.
            Exception: whatever ``fn`` raises while every worker is healthy.
        """
        if self._closed:
            raise RuntimeError(f"this cluster is closed: {self!r}")
        limit = (
            self.op_timeout_s
            if timeout_s is None
            else check_seconds("timeout_s", timeout_s, allow_zero=False)
        )
        self.check()
        call = _Call(fn, args, kwargs)
        deadline = time.monotonic() + limit
        self._unfinished = call  # until it returns
        while not call.done.wait(min(_POLL_S, max(deadline - time.monotonic(), 0.0))):
            fault = self._watchdog.fault if self._watchdog is not None else None
            if fault is not None:
                self._fault = fault
                # A fenced worker makes the call fail soon: keep TensorFlow's error as the cause.
                if call.done.wait(_CAUSE_S) and call.error is not None:
                    raise fault from call.error
                raise fault
            if time.monotonic() > deadline:
                self.check()
                self._fault = WorkerError(
                    f"the call did not finish within {limit:g} s, although every worker still answers",
                    task=None,
                    reason="timeout",
                )
                raise self._fault
        self._unfinished = None
        return self._outcome(call)

    def _outcome(self, call: _Call) -> Any:
        if call.error is None:
            return call.value
        from allreduce.core._tf import tf

        if isinstance(call.error, tf.errors.OpError) and self._watchdog is not None:
            # A lost worker shows up as a TensorFlow error first; name the worker.
            fault = self._watchdog.wait(self._watchdog.grace_s)
            if fault is not None:
                self._fault = fault
                raise fault from call.error
        raise call.error

    def _await_workers(self, timeout_s: float) -> None:
        """Returns once every worker answers; raises :class:`WorkerError` otherwise."""

    def _connect(self, address: str, timeout_s: float) -> None:
        """Connects this process, serving at ``address``, to the cluster within ``timeout_s``;
        reads the workers' devices from TensorFlow.

        Every worker must answer first: TensorFlow waits forever on one that does not.

        Raises:
            WorkerError: a worker could not be reached or did not answer in time.
        """
        # Leave time to give up and close within timeout_s.
        deadline = time.monotonic() + timeout_s - min(_CLOSE_S, timeout_s / 4)
        _connection.claim(self)
        self._await_workers(_left(deadline, "connecting"))
        self._connected = True
        try:
            limit = _left(deadline, "connecting")
            self.run(_connection.attach, self._jobs, self._job, address, timeout_s=limit)
            names = self.run(_logical_devices, timeout_s=_left(deadline, "listing the workers' devices"))
        except WorkerError as err:
            if err.reason != "timeout":
                raise
            self._fault = WorkerError(
                f"connecting to {self._jobs[self._job]} did not finish within {timeout_s:g} s, "
                "although every worker answers its heartbeat",
                task=None,
                reason="timeout",
            )
            raise self._fault from None
        found: list[list[str]] = [[] for _ in self._jobs[self._job]]
        for name, job, task in names:
            if job == self._job and task is not None and task < len(found):
                found[task].append(name)
        self._devices = [sorted(names, key=_device_order) for names in found]
        self._attached = True

    def _disconnect(self) -> None:
        stuck = None
        pending = self._unfinished
        if self._connected and not self._attached and pending is not None and not pending.done.is_set():
            # Connecting never finished: TensorFlow's context waits on a worker, and
            # leaving would wait behind it.
            log.warning("connecting never finished (a worker does not answer); not leaving the cluster")
            stuck = pending.thread
        elif self._connected:
            thread = daemon_thread(_connection.detach, "allreduce-disconnect")
            thread.start()
            thread.join(_DISCONNECT_S)
            if thread.is_alive():
                log.warning(
                    "leaving the cluster did not finish within %g s: a worker does not answer", _DISCONNECT_S
                )
                stuck = thread
        _connection.release(self, stuck)

    def _fence_all(self) -> None:
        """Ends every worker this process can end (before a disconnect after a fault)."""

    def _release(self) -> None:
        """Frees what the cluster holds once it is disconnected."""

    def close(self) -> None:
        """Disconnects and releases the workers; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        _open_clusters.discard(self)
        try:
            faulty = self._fault is not None or (self._watchdog is not None and self._watchdog.scan())
            if self._watchdog is not None:
                self._watchdog.stop()
            if faulty:
                self._fence_all()  # a worker that does not answer would block the disconnect
            self._disconnect()
        finally:
            if self._watchdog is not None:
                self._watchdog.stop()
            self._release()

    def _state(self) -> str:
        return "closed" if self._closed else "open"


def _device_type(name: str) -> str:
    """``"GPU"`` of ``/job:worker/replica:0/task:0/device:GPU:1``."""
    return name.rpartition("/device:")[2].partition(":")[0].upper()


def _left(deadline: float, what: str) -> float:
    """The seconds left before ``deadline``.

    Raises:
        WorkerError: none are left (``reason="timeout"``).
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise WorkerError(
            f"{what} did not start before the connection's deadline",
            task=None,
            reason="timeout",
        )
    return left


def _logical_devices() -> list[tuple[str, str | None, int | None]]:
    """``(name, job, task)`` of every logical device TensorFlow knows (waits on every worker)."""
    from allreduce.core._tf import tf

    out = []
    for device in tf.config.list_logical_devices():
        spec = tf.DeviceSpec.from_string(device.name)
        out.append((device.name, spec.job, spec.task))
    return out


def _device_order(name: str) -> tuple[str, int]:
    from allreduce.core._tf import tf

    spec = tf.DeviceSpec.from_string(name)
    return spec.device_type or "", spec.device_index or 0


_open_clusters: set[Cluster] = set()


@atexit.register
def _close_all() -> None:
    for cluster in list(_open_clusters):
        cluster.close()
