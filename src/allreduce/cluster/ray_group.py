"""One actor per worker in one Ray placement group: :class:`RayGroup`.

The part that :func:`allreduce.cluster.ray_cluster` (TensorFlow servers the driver
connects to) and :func:`allreduce.spmd.launch` with ``backend="ray"`` (the program run
on every worker) share: Ray started for the request unless the caller started it
(:func:`init_ray`); one placement group with one bundle per worker; one actor per bundle
that reports its node, process and a port free on its node; a death notice per actor
(a call that returns only when the actor ends); fencing (``SIGKILL`` of the process,
then ``ray.kill``); and the release of all of it, with a reaper for Ray's agents when
this process started Ray. Ray itself is imported only by :func:`import_ray`'s callers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from allreduce.cluster.errors import WorkerStartError
from allreduce.cluster.ray_actors import RayWorker, signal_process
from allreduce.cluster.supervisor import Reaper, descendants, process_state

__all__ = ["PLACEMENT_STRATEGIES", "RayGroup", "RayRequest", "init_ray"]

log = logging.getLogger("allreduce.cluster")

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
_END_S = 10.0
#: Seconds ``ray.kill`` has to end an actor at release before its process is killed.
_KILL_GRACE_S = 2.0


class RayRequest(NamedTuple):
    """What a group asks of Ray: ``workers`` actors with ``cpus`` CPUs and ``gpus`` GPUs
    each, placed by ``strategy``; ``devices`` logical CPUs per worker."""

    workers: int
    devices: int
    cpus: float
    gpus: int
    strategy: str
    runtime_env: Mapping[str, Any] | None


def init_ray(ray: Any, address: str | None, req: RayRequest) -> bool:
    """Initialises Ray unless the caller has; whether the caller must shut it down."""
    if ray.is_initialized():
        return False
    if address is None:
        log.info("starting a local Ray instance with %d CPUs", math.ceil(req.workers * req.cpus))
        ray.init(
            address="local",
            num_cpus=math.ceil(req.workers * req.cpus),
            include_dashboard=False,
            _system_config={"worker_niceness": 0},  # see ray_actors.normal_priority
        )
    else:
        ray.init(address=address)
    return True


class RayGroup:
    """The placement group, actors and death notices of one request.

    Attributes:
        actors: each worker's actor handle.
        workers: each worker's :class:`~allreduce.cluster.ray_actors.RayWorker`, once
            :meth:`start` has returned.
        watches: each actor's death notice (an object ref that fails when it dies).
        pg: the placement group.
    """

    def __init__(self, ray: Any, request: RayRequest, owns_ray: bool) -> None:
        self.ray, self.request, self.owns_ray = ray, request, owns_ray
        self.pg: Any = None
        self.actors: list[Any] = []
        self.workers: list[RayWorker] = []
        self.watches: list[Any] = []
        self._reaper: Reaper | None = None
        self._local_node = ray.get_runtime_context().get_node_id()

    def start(self, actor_class: type, deadline: float, timeout_s: float) -> None:
        """Places the group and one ``actor_class(task)`` per bundle, and learns each
        one's node, process and free port (its ``reserve()``).

        Raises:
            WorkerStartError: not placed, or an actor failed or was late, by ``deadline``.
        """
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        ray, req = self.ray, self.request
        bundle = {k: v for k, v in (("CPU", req.cpus), ("GPU", req.gpus)) if v}
        self.pg = ray.util.placement_group([dict(bundle) for _ in range(req.workers)], strategy=req.strategy)
        if not ray.wait([self.pg.ready()], timeout=max(0.0, deadline - time.monotonic()))[0]:
            raise WorkerStartError(_not_placed(ray, req, bundle, timeout_s), task=None, reason="start failed")
        actor = ray.remote(actor_class)
        for i in range(req.workers):
            options: dict[str, Any] = {"num_cpus": req.cpus, "num_gpus": req.gpus, "max_concurrency": 2}
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.pg, placement_group_bundle_index=i
            )
            if req.runtime_env is not None:
                options["runtime_env"] = dict(req.runtime_env)
            self.actors.append(actor.options(**options).remote(i))
        found = self.gather([a.reserve.remote() for a in self.actors], deadline, timeout_s)
        self.workers = [RayWorker(i, **info) for i, info in enumerate(found)]

    def watch(self) -> None:
        """Asks every actor for its death notice; a reaper ends Ray's agents if this
        process dies, where it started Ray (they outlive a killed raylet)."""
        self.watches = [a.watch.remote() for a in self.actors]
        if self.owns_ray:
            self._reaper = Reaper(descendants(b"ray"))

    def gather(self, refs: list[Any], deadline: float, timeout_s: float) -> list[Any]:
        """Each worker's answer; a :class:`WorkerStartError` naming the first that failed or is late."""
        ray, found = self.ray, []
        for task, ref in enumerate(refs):
            name = self.describe(task)
            try:
                found.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
            except ray.exceptions.GetTimeoutError:
                late = f"{name} was not ready after {timeout_s:g} s"
                raise WorkerStartError(late, task=task, reason="start failed") from None
            except ray.exceptions.RayError as err:
                text = str(err)
                raise WorkerStartError(
                    f"{name} could not start: {text}", task=task, reason="start failed", stderr=text
                ) from err
        return found

    def describe(self, task: int) -> str:
        """``worker 1 (/job:worker/replica:0/task:1, node ... at IP, pid ..., IP:PORT)``."""
        return self.workers[task].describe() if task < len(self.workers) else f"worker {task}"

    def signal(self, task: int, sig: int) -> Any:
        """Sends ``sig`` to the worker's process: here, or by a task on its node (returned)."""
        worker = self.workers[task]
        if worker.node_id == self._local_node and not client_mode(self.ray):
            signal_process(worker.pid, sig)
            return None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        where = NodeAffinitySchedulingStrategy(worker.node_id, soft=False)
        return (
            self.ray.remote(signal_process)
            .options(num_cpus=0, scheduling_strategy=where)
            .remote(worker.pid, sig)
        )

    def end(self, task: int) -> None:
        """Kills worker ``task``'s process (``ray.kill`` alone takes 5 s on a stopped one) and actor."""
        import signal

        with contextlib.suppress(Exception):  # Ray may already be down (interpreter exit)
            if task < len(self.workers):
                self.signal(task, signal.SIGKILL)
            self.ray.kill(self.actors[task], no_restart=True)

    def release(self) -> None:
        """Ends every actor (``ray.kill``, then :meth:`end` for any that has not died
        within :data:`_KILL_GRACE_S`, a stopped one), waits for their deaths, removes the
        placement group, and shuts Ray down where this process started it."""
        for actor in self.actors:
            with contextlib.suppress(Exception):  # Ray may already be down
                self.ray.kill(actor, no_restart=True)
        dead: list[Any] = []
        with contextlib.suppress(Exception):
            if self.watches:
                dead, _ = self.ray.wait(self.watches, num_returns=len(self.watches), timeout=_KILL_GRACE_S)
        for task, watch in enumerate(self.watches or [None] * len(self.actors)):
            if watch is None or watch not in dead:
                self.end(task)
        with contextlib.suppress(Exception):
            if self.watches:
                self.ray.wait(self.watches, num_returns=len(self.watches), timeout=_END_S)
            self._reap_local()
            if self.pg is not None:
                self.ray.util.remove_placement_group(self.pg)
        if self.owns_ray:
            with contextlib.suppress(Exception):
                self.ray.shutdown()
        if self._reaper is not None:  # Ray ended in order: the reaper has nothing to do
            self._reaper.dismiss()

    def _reap_local(self) -> None:
        """Waits until the processes of workers on this node have exited (Ray reports a death a
        little before the process is gone)."""
        here = [w.pid for w in self.workers if w.node_id == self._local_node and not client_mode(self.ray)]
        deadline = time.monotonic() + _END_S
        while any(process_state(p) not in (None, "Z") for p in here) and time.monotonic() < deadline:
            time.sleep(0.02)


def client_mode(ray: Any) -> bool:
    """Whether this process is a Ray client (``ray://``), with no Ray node of its own."""
    with contextlib.suppress(Exception):
        return bool(ray.util.client.ray.is_connected())
    return False


def _amounts(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def _not_placed(ray: Any, req: RayRequest, bundle: dict[str, float], timeout_s: float) -> str:
    asked = {k: v * req.workers for k, v in bundle.items()}
    return (
        f"Ray could not place {req.workers} workers x {{{_amounts(bundle)}}} ({_amounts(asked)} in all, "
        f"strategy {req.strategy}) within {timeout_s:g} s: the Ray cluster has "
        f"{_amounts(ray.cluster_resources())}, {_amounts(ray.available_resources())} of it free"
    )
