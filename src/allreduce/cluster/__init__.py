"""Multi-worker clusters: local worker processes, or servers elsewhere, behind one interface.

:func:`local_cluster` starts ``workers`` ``tf.distribute.Server`` processes on
``127.0.0.1``; :func:`ray_cluster` starts them as Ray actors (the ``ray`` extra, imported
only when used); :func:`connect` joins servers that run elsewhere (``allreduce-worker``).
Either connects the calling process and yields a cluster whose devices the same
all-reduce code uses::

    with local_cluster(2, 2) as cluster:
        tensors = []
        for i, device in enumerate(d for worker in cluster.devices_of("CPU") for d in worker):
            with tf.device(device):
                tensors.append(tf.fill([1024], float(i)))
        summed = cluster.run(allreduce.all_reduce, tensors, "pscpu/pscpu")

A watchdog checks every worker in the background while the cluster is open. A worker
found stopped or silent is killed where this process started it, so that every call
waiting on it, in :meth:`Cluster.run` or not, fails at once; :meth:`Cluster.run` raises
:class:`WorkerError` naming the worker. Tensors that live on a closed cluster's workers
stay safe to hold: using one raises an exception naming its worker or device (a
TensorFlow error, or ``ValueError`` from this library's checks), never crashes the
process. The servers have no authentication and TensorFlow binds them to every
interface (``0.0.0.0``): run them on a trusted network only.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from allreduce.cluster import connection as _connection
from allreduce.cluster.base import Cluster
from allreduce.cluster.cluster_spec import check_cluster_spec
from allreduce.cluster.errors import WorkerError, WorkerStartError
from allreduce.cluster.supervisor import Supervisor
from allreduce.cluster.watchdog import NetworkProbe, ProcessProbe, Watchdog
from allreduce.cluster.worker import JOB_NAME
from allreduce.core.validation import check_bool, check_int, check_ports, check_seconds

if TYPE_CHECKING:  # loaded on first use by __getattr__, with Ray
    from allreduce.cluster.ray_backend import RayCluster, ray_cluster

__all__ = [
    "DEFAULT_OP_TIMEOUT_S",
    "DEFAULT_UNRESPONSIVE_S",
    "Cluster",
    "LocalCluster",
    "RayCluster",
    "RemoteCluster",
    "WorkerError",
    "WorkerStartError",
    "connect",
    "local_cluster",
    "ray_cluster",
]

log = logging.getLogger(__name__)

#: Default bound, in seconds, of one :meth:`Cluster.run` call.
DEFAULT_OP_TIMEOUT_S = 30.0
#: A worker whose heartbeat has been silent this long counts as not answering.
DEFAULT_UNRESPONSIVE_S = 5.0
DEFAULT_START_TIMEOUT_S = 120.0
_LOCAL_GRACE_S = 2.0
_AWAIT_POLL_S = 0.05


class LocalCluster(Cluster):
    """Worker processes on ``127.0.0.1``, made by :func:`local_cluster`.

    Attributes:
        devices: one list of full device names per worker.
        pids: the worker process ids, by task.
        addresses: ``host:port`` of each worker.
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
        self._supervisor = Supervisor(workers, devices_per_worker, ports, start_timeout_s)
        super().__init__({JOB_NAME: self._supervisor.addresses}, JOB_NAME, op_timeout_s, unresponsive_s)
        prefixes = [w.device_prefix for w in self._supervisor.workers]
        self._devices = [[f"{p}/device:CPU:{i}" for i in range(devices_per_worker)] for p in prefixes]
        probes = [ProcessProbe(w, unresponsive_s) for w in self._supervisor.workers]
        self._watch(Watchdog(probes, grace_s=_LOCAL_GRACE_S, name="allreduce-watchdog"))

    @property
    def workers(self) -> int:
        return len(self._supervisor.workers)

    @property
    def addresses(self) -> list[str]:
        return self._supervisor.addresses

    @property
    def pids(self) -> list[int]:
        return self._supervisor.pids

    def kill(self, task: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` (default ``SIGKILL``) to worker ``task``, e.g. to test faults.

        With ``SIGKILL`` or ``SIGTERM`` it waits until the process is gone. A worker
        stopped with ``SIGSTOP`` is soon killed by the watchdog.

        Raises:
            ValueError: no such task.
        """
        self._supervisor.kill(task, sig)

    def _connect(self, address: str, timeout_s: float) -> None:
        expected = self._devices
        super()._connect(address, timeout_s)
        found = {d for worker in self._devices for d in worker}
        self._devices = expected  # CPUs only, even where a worker also sees a GPU
        missing = [d for worker in expected for d in worker if d not in found]
        if missing:
            raise WorkerError(
                f"connected, but devices {missing} are not visible", task=None, reason="start failed"
            )

    def _fence_all(self) -> None:
        self._supervisor.close()

    def _release(self) -> None:
        self._supervisor.close()
        log.info("stopped workers %s", self.pids)

    def __repr__(self) -> str:
        size = f"{self.workers} workers x {self.devices_per_worker} CPUs"
        return f"LocalCluster({size}, {self._state()}, {self.addresses})"


class RemoteCluster(Cluster):
    """Servers this process did not start, joined by :func:`connect`; health comes over the network."""

    def __init__(
        self, jobs: dict[str, list[str]], job: str, op_timeout_s: float, unresponsive_s: float
    ) -> None:
        super().__init__(jobs, job, op_timeout_s, unresponsive_s)
        self._probes = [NetworkProbe(t, job, a, unresponsive_s) for t, a in enumerate(jobs[job])]
        self._watch(Watchdog(self._probes, grace_s=unresponsive_s + 1.0, name="allreduce-watchdog"))

    def _await_workers(self, timeout_s: float) -> None:
        """Waits until every worker has answered a heartbeat, within ``timeout_s``.

        Raises:
            WorkerError: a worker cannot be reached or stays silent for ``unresponsive_s``
                (the watchdog's verdict), or has not answered within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while not all(p.answered for p in self._probes):
            fault = self._watchdog.wait(_AWAIT_POLL_S) if self._watchdog is not None else None
            if fault is not None:
                self._fault = fault
                raise fault
            if time.monotonic() > deadline:
                silent = next(p for p in self._probes if not p.answered)
                silence = f"has not answered within {timeout_s:g} s of connecting"
                self._fault = silent.error("unresponsive", silence)
                raise self._fault

    def __repr__(self) -> str:
        return f"RemoteCluster(job {self._job!r}, {self._state()}, {self._jobs[self._job]})"


def __getattr__(name: str) -> Any:
    """:func:`ray_cluster` and :class:`RayCluster`, loaded on first use (PEP 562)."""
    if name in ("ray_cluster", "RayCluster"):
        from allreduce.cluster import ray_backend as _ray_cluster

        return getattr(_ray_cluster, name)
    raise AttributeError(f"module 'allreduce.cluster' has no attribute {name!r}")


def _check_not_connected() -> None:
    if _connection.owner() is not None:
        raise RuntimeError(f"this process is already connected to {_connection.owner()!r}; close it first")


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
    joins as job ``localhost``. On leaving the block, by any path, the workers are
    killed and reaped; a worker also dies with the thread that started it, even while
    stopped. A process is connected to one cluster at a time. Tensors on the workers
    stay there: after the block, using one raises an exception naming its worker or
    device (read values with ``.numpy()`` inside the block).

    Args:
        workers: the number of worker processes.
        devices_per_worker: logical CPUs per worker.
        op_timeout_s: the default deadline of :meth:`Cluster.run`.
        unresponsive_s: how long a silent heartbeat means a worker stopped answering.
        connect: ``False`` only starts the servers (e.g. for another process to :func:`connect`).
        ports: one port per worker; by default free ports are picked.
        start_timeout_s: the most seconds to wait for the servers and the connection.

    Yields:
        The :class:`LocalCluster`.

    Raises:
        TypeError, ValueError: bad counts, ports, timeouts or ``connect``.
        WorkerStartError: a worker could not start; the message holds its stderr.
        WorkerError: a worker failed while connecting.
        RuntimeError: this process is already connected to another cluster.
    """
    check_int("workers", workers, minimum=1)
    check_int("devices_per_worker", devices_per_worker, minimum=1)
    op_timeout_s = check_seconds("op_timeout_s", op_timeout_s, allow_zero=False)
    unresponsive_s = check_seconds("unresponsive_s", unresponsive_s, allow_zero=False)
    start_timeout_s = check_seconds("start_timeout_s", start_timeout_s, allow_zero=False)
    chosen = check_ports(ports, workers)
    if check_bool("connect", connect):
        _check_not_connected()
        address = _connection.client_address([], None)
    cluster = LocalCluster(
        workers,
        devices_per_worker,
        op_timeout_s=op_timeout_s,
        unresponsive_s=unresponsive_s,
        ports=chosen,
        start_timeout_s=start_timeout_s,
    )
    try:
        if connect:
            cluster._connect(address, start_timeout_s)
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def connect(
    cluster_spec: Any,
    *,
    job_name: str = JOB_NAME,
    op_timeout_s: float = DEFAULT_OP_TIMEOUT_S,
    unresponsive_s: float = DEFAULT_UNRESPONSIVE_S,
) -> Iterator[RemoteCluster]:
    """Connects this process to TensorFlow servers it did not start, e.g. on other hosts.

    The workers are the tasks of job ``job_name``; a ``"localhost"`` job, if present, is
    this process's own address (required when a worker is on another host, so that it
    can reach this process). A heartbeat to each worker's server, every 0.5 s with its
    own deadline, finds a worker that died or froze: :meth:`Cluster.run` then raises
    :class:`WorkerError` within ``unresponsive_s`` (there is no process to kill, so
    calls outside ``run`` are not ended). Connecting is bounded too: every worker must
    answer a heartbeat first, and the whole connection must finish within
    ``op_timeout_s``, else :class:`WorkerError` naming the worker where one is to blame.
    Leaving the block disconnects; the servers run on.

    Args:
        cluster_spec: ``{job: ["host:port", ...]}``, a ``tf.train.ClusterSpec``, or a
            ``tf.distribute.cluster_resolver.ClusterResolver`` (``TFConfigClusterResolver``,
            ``SimpleClusterResolver``, Slurm's, Kubernetes'...), whose ``cluster_spec()`` is used.
        job_name: the job whose tasks are the workers.
        op_timeout_s: the default deadline of :meth:`Cluster.run`.
        unresponsive_s: how long a worker may leave its heartbeat unanswered.

    Yields:
        The :class:`RemoteCluster`, with ``devices`` read from TensorFlow once connected.

    Raises:
        TypeError, ValueError: a bad cluster spec, job name or timeout, naming it.
        WorkerError: within ``op_timeout_s``, a worker could not be reached
            (``reason="unreachable"``), did not answer (``"unresponsive"``), or the
            connection did not finish (``"timeout"``).
        RuntimeError: this process is already connected to another cluster, or an
            earlier connection of it never finished.
    """
    jobs, client = check_cluster_spec(cluster_spec, job_name, _connection.CLIENT_JOB)
    op_timeout_s = check_seconds("op_timeout_s", op_timeout_s, allow_zero=False)
    unresponsive_s = check_seconds("unresponsive_s", unresponsive_s, allow_zero=False)
    _check_not_connected()
    address = _connection.client_address([a for tasks in jobs.values() for a in tasks], client)
    # TensorFlow takes seconds to import: before the deadline and the heartbeats start.
    import allreduce.core._tf  # noqa: F401

    cluster = RemoteCluster(jobs, job_name, op_timeout_s, unresponsive_s)
    try:
        cluster._connect(address, op_timeout_s)
        yield cluster
    finally:
        cluster.close()
