"""The parts of a Ray worker: the actor that runs a TensorFlow server in its Ray worker
process (:class:`ServerActor`), what the driver knows of it (:class:`RayWorker`,
:class:`RayNode`), and how the watchdog reads its health (:class:`ActorProbe`: Ray's
death notice, or a silent heartbeat). Ray is imported only inside the actor and by
:func:`import_ray`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any, NamedTuple

from allreduce.cluster.errors import WorkerError
from allreduce.cluster.watchdog import NetworkProbe
from allreduce.cluster.worker import JOB_NAME, die_with_parent

__all__ = [
    "ActorProbe",
    "GroupActor",
    "RayNode",
    "RayWorker",
    "ServerActor",
    "import_ray",
    "normal_priority",
    "ray_reason",
    "signal_process",
]

_REASON_CHARS = 400


def import_ray(user: str = "ray_cluster") -> Any:
    """The ``ray`` module; ``ImportError`` naming ``user`` and the ``ray`` extra without it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"{user} needs Ray, which is not installed: pip install 'allreduce[ray]'") from err
    return ray


class RayNode(NamedTuple):
    """Where a worker runs: Ray's node id and the node's IP."""

    node_id: str
    ip: str


class RayWorker(NamedTuple):
    """One worker's actor: its task, node, process and server port."""

    task: int
    node_id: str
    ip: str
    pid: int
    port: int

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def describe(self) -> str:
        prefix = f"/job:{JOB_NAME}/replica:0/task:{self.task}"
        where = f"node {self.node_id[:12]} at {self.ip}, pid {self.pid}, {self.address}"
        return f"worker {self.task} ({prefix}, {where})"


def normal_priority() -> None:
    """Puts this process back at niceness 0: Ray starts workers at niceness 15, where on a
    busy node a TensorFlow server gets the CPU last. Linux keeps a niceness per thread; the
    threads started after this (TensorFlow's) inherit it."""
    with contextlib.suppress(OSError):  # lowering it may need a privilege
        os.setpriority(os.PRIO_PROCESS, 0, 0)


class GroupActor:  # pragma: no cover - runs in the Ray actor processes
    """One worker's actor in a :class:`allreduce.cluster.ray_group.RayGroup` (two threads:
    calls, and :meth:`watch`)."""

    def __init__(self, task: int) -> None:
        die_with_parent(os.getppid())  # the raylet; SIGKILL reaches this process even while stopped
        self._task = task
        self._ended = threading.Event()

    def reserve(self) -> dict[str, Any]:
        """The node, the pid, and a port free on this node now."""
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))  # TensorFlow binds every interface
            port = probe.getsockname()[1]
        node = ray.get_runtime_context().get_node_id()
        return {"node_id": node, "ip": ray.util.get_node_ip_address(), "pid": os.getpid(), "port": port}

    def watch(self) -> None:
        """Returns only once the actor ends: its failure is the driver's death notice."""
        self._ended.wait()


class ServerActor(GroupActor):  # pragma: no cover - runs in the Ray actor processes
    """One worker's TensorFlow server inside its Ray actor process."""

    def __init__(self, task: int) -> None:
        super().__init__(task)
        self._server: Any = None

    def start(self, cluster: dict[str, list[str]], cpus: int, gpus: int) -> None:
        """Starts this task's server with ``cpus`` logical CPUs, or with its ``gpus`` GPUs."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        normal_priority()
        from allreduce.core._tf import tf

        count = {"CPU": 1, "GPU": gpus} if gpus else {"CPU": cpus}
        self._server = tf.distribute.Server(
            tf.train.ClusterSpec(cluster),
            job_name=JOB_NAME,
            task_index=self._task,
            config=tf.compat.v1.ConfigProto(device_count=count),
            start=True,
        )


def signal_process(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def ray_reason(err: BaseException) -> str:
    """Ray's own words for why an actor died, on one line."""
    text = str(err)
    start = text.find("The actor is dead because")
    reason = " ".join((text[start:] if start >= 0 else text).split())
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 3] + "..."


class ActorProbe:
    """A worker's actor: Ray reports it dead, or its server's heartbeat is silent."""

    def __init__(self, cluster: Any, worker: RayWorker, unresponsive_s: float) -> None:
        self.task = worker.task
        self._cluster = cluster
        self._worker = worker
        self._network = NetworkProbe(worker.task, JOB_NAME, worker.address, unresponsive_s)

    def fault(self) -> tuple[str, str] | None:
        ray, watch = self._cluster._ray, self._cluster._watches[self.task]
        done, _ = ray.wait([watch], timeout=0)
        if done:
            try:
                ray.get(watch, timeout=0)
                return "exited", "ended"
            except Exception as err:
                return "exited", f"died: {ray_reason(err)}"
        return self._network.fault()

    def fence(self) -> bool:
        self._cluster._end(self.task)
        return True

    def error(self, reason: str, description: str) -> WorkerError:
        return WorkerError(f"{self._worker.describe()} {description}", task=self.task, reason=reason)

    def close(self) -> None:
        self._network.close()
