"""Who this worker is, and TensorFlow's collective runtime started for it.

The cluster comes from ``TF_CONFIG``, a TF_CONFIG-style dict or a
``tf.distribute.cluster_resolver.ClusterResolver``. :func:`start` starts this task's
server and collective runtime once per process, through the public
``tf.distribute.MultiWorkerMirroredStrategy`` (creating it does both); later calls
return the same :class:`Worker`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from allreduce.core.validation import check_int, check_spmd_cluster

__all__ = ["Worker", "resolve", "start"]

log = logging.getLogger("allreduce.spmd")

_lock = threading.Lock()
_started: list[Worker] = []
_strategy: list[Any] = []


@dataclass(frozen=True)
class Worker:
    """This process's place in the cluster.

    Attributes:
        rank: its position among the workers (``chief`` tasks first, then ``worker``).
        num_workers: how many workers run the program.
        job, task: its job name and task index.
        addresses: every worker's address, in rank order (for error messages).
    """

    rank: int
    num_workers: int
    job: str
    task: int
    addresses: tuple[str, ...]

    @property
    def device_prefix(self) -> str:
        return f"/job:{self.job}/replica:0/task:{self.task}"

    def describe(self, rank: int) -> str:
        """``"task 3 (127.0.0.1:2345)"`` for the worker of ``rank``."""
        return f"task {rank} ({self.addresses[rank]})"


def _as_config(cluster: Any) -> dict:
    if cluster is None:
        text = os.environ.get("TF_CONFIG")
        if not text:
            raise ValueError("no cluster: TF_CONFIG is not set and cluster= was not given")
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"TF_CONFIG is not JSON: {err}: {text[:200]!r}") from err
    if hasattr(cluster, "cluster_spec") and hasattr(cluster, "task_type"):
        return {
            "cluster": cluster.cluster_spec().as_dict(),
            "task": {"type": cluster.task_type, "index": cluster.task_id},
        }
    return cluster


def resolve(cluster: Any = None) -> Worker:
    """This worker as ``cluster`` (``None``: ``TF_CONFIG``) describes it; starts nothing.

    Raises:
        TypeError, ValueError: ``cluster`` or ``TF_CONFIG`` is malformed (see
            :func:`allreduce.core.validation.check_spmd_cluster`).
    """
    workers, rank = check_spmd_cluster(_as_config(cluster))
    job, task, _ = workers[rank]
    return Worker(rank, len(workers), job, task, tuple(a for _, _, a in workers))


def _split_cpu(devices_per_worker: int) -> None:
    from allreduce.core._tf import tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    configs = [tf.config.LogicalDeviceConfiguration()] * devices_per_worker
    if tf.config.get_logical_device_configuration(cpu) != configs:
        tf.config.set_logical_device_configuration(cpu, configs)


def start(cluster: Any = None, *, devices_per_worker: int | None = None) -> Worker:
    """Starts this task's server and TensorFlow's collective runtime (once per process)
    and returns this worker.

    TensorFlow accepts this only before its runtime starts: call it first in a
    worker's program, before any other TensorFlow op. ``devices_per_worker`` splits the
    CPU into that many logical devices first (``CPU:0..k-1``).

    Raises:
        TypeError, ValueError: as :func:`resolve`; or the runtime was started for
            another cluster or task in this process.
        RuntimeError: TensorFlow's runtime started before this call.
    """
    worker = resolve(cluster)
    if devices_per_worker is not None:
        check_int("devices_per_worker", devices_per_worker, minimum=1)
    with _lock:
        if _started:
            if _started[0] != worker:
                raise ValueError(f"this process already runs as {_started[0]}, not {worker}")
            return worker
        from allreduce.core._tf import tf

        if devices_per_worker is not None:
            _split_cpu(devices_per_worker)
        config = _as_config(cluster)
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(config["cluster"]),
            task_type=config["task"]["type"],
            task_id=config["task"]["index"],
            rpc_layer="grpc",
        )
        with tf.init_scope():
            _strategy.append(tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver))
        _started.append(worker)
        log.info(
            "worker %d of %d started at %s", worker.rank, worker.num_workers, worker.addresses[worker.rank]
        )
        return worker
