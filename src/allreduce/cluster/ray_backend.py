"""Workers as Ray actors: :func:`ray_cluster` and :class:`RayCluster`.

One placement group holds one bundle per worker; one actor per bundle starts a
``tf.distribute.Server`` for ``/job:worker/task:N`` on its node's IP and a free port of
that node. The calling process is the Ray driver and joins the servers as job
``localhost``; above that, a :class:`RayCluster` is a :class:`allreduce.cluster.Cluster`
like any other.

Health comes from two sides, both read by the cluster's
:class:`allreduce.cluster.watchdog.Watchdog`: every actor holds one call that returns only when
the actor ends, so Ray's death notice (with Ray's reason) arrives as soon as Ray knows;
and a :class:`allreduce.cluster.watchdog.NetworkProbe` heartbeat to each server finds a worker
that froze or whose node dropped off. A frozen worker is fenced: its process gets
``SIGKILL`` (directly on this node, through a zero-CPU task pinned to its node
elsewhere) and its actor ``ray.kill``.

When the driver dies, Ray kills its job's actors; a local Ray it started dies with it
(``PR_SET_PDEATHSIG``), and each actor asks the kernel for ``SIGKILL`` when its raylet
dies, which reaches it even while stopped. Ray is imported only by :func:`ray_cluster`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from allreduce.cluster import connection as _connection
from allreduce.cluster.base import Cluster
from allreduce.cluster.errors import WorkerError
from allreduce.cluster.ray_actors import ActorProbe, RayNode, RayWorker, ServerActor, import_ray
from allreduce.cluster.ray_group import PLACEMENT_STRATEGIES, RayGroup, RayRequest, init_ray
from allreduce.cluster.watchdog import Watchdog
from allreduce.cluster.worker import JOB_NAME
from allreduce.core.validation import (
    check_choice,
    check_int,
    check_optional,
    check_ray_address,
    check_ray_resources,
    check_seconds,
)

__all__ = ["PLACEMENT_STRATEGIES", "RayCluster", "RayNode", "import_ray", "ray_cluster"]

log = logging.getLogger("allreduce.cluster")

DEFAULT_START_TIMEOUT_S = 60.0
#: How long a TensorFlow error waits for Ray to name the worker behind it.
_GRACE_S = 2.0
_END_S = 10.0


class RayCluster(Cluster):
    """Workers as Ray actors, made by :func:`ray_cluster`.

    Attributes:
        devices: one list of full device names per worker (its logical CPUs, or its GPUs).
        pids: each worker's process id, as its actor reports it (on its own node).
        nodes: each worker's :class:`RayNode`.
        actors: each worker's Ray actor handle.
        addresses: ``ip:port`` of each worker's server.
    """

    def __init__(self, ray: Any, request: RayRequest, timeouts: Sequence[float], owns_ray: bool) -> None:
        op_timeout_s, unresponsive_s, start_timeout_s = timeouts
        self._ray, self._request = ray, request
        self._group = RayGroup(ray, request, owns_ray)
        try:
            self._start(start_timeout_s)
        except BaseException:  # Ctrl-C while starting too: nothing is left behind
            self._release()
            raise
        super().__init__({JOB_NAME: self.addresses}, JOB_NAME, op_timeout_s, unresponsive_s)
        probes = [ActorProbe(self, w, unresponsive_s) for w in self._workers]
        self._watch(Watchdog(probes, grace_s=_GRACE_S, name="allreduce-watchdog"))

    @property
    def actors(self) -> list[Any]:
        return self._group.actors

    @property
    def _workers(self) -> list[RayWorker]:
        return self._group.workers

    @property
    def _watches(self) -> list[Any]:
        return self._group.watches

    @property
    def _pg(self) -> Any:
        return self._group.pg

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    @property
    def nodes(self) -> list[RayNode]:
        return [RayNode(w.node_id, w.ip) for w in self._workers]

    @property
    def addresses(self) -> list[str]:
        return [w.address for w in self._workers]

    @property
    def workers(self) -> int:
        return len(self._workers)

    def _start(self, timeout_s: float) -> None:
        req, group = self._request, self._group
        deadline = time.monotonic() + timeout_s
        group.start(ServerActor, deadline, timeout_s)
        spec = {JOB_NAME: self.addresses}
        group.gather([a.start.remote(spec, req.devices, req.gpus) for a in self.actors], deadline, timeout_s)
        group.watch()
        log.info("started %d Ray workers at %s", req.workers, ", ".join(self.addresses))

    def _end(self, task: int) -> None:
        """Kills worker ``task``'s process and actor."""
        self._group.end(task)

    def kill(self, task: int, sig: int | None = None) -> None:
        """Ends worker ``task`` with ``ray.kill`` (default) or sends its process ``sig``, e.g. to
        test faults; with ``ray.kill``, ``SIGKILL`` or ``SIGTERM``, until Ray reports it dead.

        Raises:
            ValueError: no such task.
        """
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < self.workers:
            raise ValueError(f"task must be 0..{self.workers - 1}, got {task!r}")
        if sig is None:
            self._ray.kill(self.actors[task], no_restart=True)
        else:
            sent = self._group.signal(task, sig)
            if sent is not None:
                self._ray.get(sent, timeout=_END_S)
        if sig in (None, signal.SIGKILL, signal.SIGTERM):
            self._ray.wait([self._watches[task]], timeout=_END_S)

    def _connect(self, address: str, timeout_s: float) -> None:
        super()._connect(address, timeout_s)
        kind = "GPU" if self._request.gpus else "CPU"
        wanted = self._request.gpus or self._request.devices
        self._devices = [[d for d in worker if f"/device:{kind}:" in d] for worker in self._devices]
        for task, worker in enumerate(self._devices):
            if len(worker) != wanted:
                raise WorkerError(
                    f"connected, but {self._workers[task].describe()} shows {len(worker)} {kind} devices, "
                    f"not {wanted}",
                    task=task,
                    reason="start failed",
                )

    def _fence_all(self) -> None:
        for task in range(len(self.actors)):
            self._end(task)

    def _release(self) -> None:
        self._group.release()
        log.info("stopped Ray workers %s", self.pids)

    def __repr__(self) -> str:
        req = self._request
        kind = f"{req.gpus} GPUs" if req.gpus else f"{req.devices} CPUs"
        state = self._state() if hasattr(self, "_closed") else "starting"
        return f"RayCluster({req.workers} workers x {kind}, {state}, {self.addresses})"


@contextlib.contextmanager
def ray_cluster(
    num_workers: int,
    devices_per_worker: int = 1,
    *,
    cpus_per_worker: float = 1,
    gpus_per_worker: int = 0,
    placement_strategy: str = "PACK",
    address: str | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    op_timeout_s: float = 30.0,
    unresponsive_s: float = 5.0,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> Iterator[RayCluster]:
    """Starts ``num_workers`` TensorFlow servers as Ray actors and connects this process.

    Each worker is an actor in its own bundle (``cpus_per_worker`` CPUs,
    ``gpus_per_worker`` GPUs) of one placement group (``placement_strategy``), serving
    ``/job:worker/task:N`` with ``devices_per_worker`` logical CPUs, or the GPUs Ray gave
    it. With ``address=None`` and Ray not initialised, a local Ray sized for the request
    is started and shut down on exit; a Ray the caller initialised, or one at ``address``
    (``"auto"``, ``"ray://..."``, ``host:port``), is left running. Leaving the block, by
    any path, kills the actors and removes the placement group. Yields the :class:`RayCluster`.

    Raises:
        TypeError, ValueError: a bad argument, naming it, before anything starts.
        ImportError: Ray is not installed.
        WorkerStartError: the placement group was not ready within ``start_timeout_s``
            (naming what was asked and what the cluster has), or a worker failed to
            start (with its error text).
        WorkerError: a worker failed while connecting.
        RuntimeError: this process is already connected to another cluster.
    """
    check_int("num_workers", num_workers, minimum=1)
    check_int("devices_per_worker", devices_per_worker, minimum=1)
    cpus, gpus = check_ray_resources(cpus_per_worker, gpus_per_worker)
    check_choice("placement_strategy", placement_strategy, PLACEMENT_STRATEGIES)
    check_ray_address(address)
    check_optional("runtime_env", runtime_env, Mapping, "a dict")
    timeouts = [
        check_seconds("op_timeout_s", op_timeout_s, allow_zero=False),
        check_seconds("unresponsive_s", unresponsive_s, allow_zero=False),
        check_seconds("start_timeout_s", start_timeout_s, allow_zero=False),
    ]
    ray = import_ray()
    if _connection.owner() is not None:
        raise RuntimeError(f"this process is already connected to {_connection.owner()!r}; close it first")
    request = RayRequest(num_workers, devices_per_worker, cpus, gpus, placement_strategy, runtime_env)
    owns = init_ray(ray, address, request)
    cluster = RayCluster(ray, request, timeouts, owns)
    try:
        client = _connection.client_address_on(ray.util.get_node_ip_address())
        cluster._connect(client, timeouts[2])
        yield cluster
    finally:
        cluster.close()
