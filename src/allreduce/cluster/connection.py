"""This process's TensorFlow connection to a cluster: join one, leave it, join the next.

TensorFlow's eager context holds one cluster (a ``ServerDef``). Replacing it with
``tf.config.experimental_connect_to_cluster`` resets the context and frees the remote
devices that tensors created on them still point to: reading such a tensor afterwards
(even its ``.device``) kills the process with ``SIGSEGV``. So only the first connection
of a process resets the context; every later change, leaving a cluster or joining the
next, *updates* the ``ServerDef``, and TensorFlow keeps the devices of removed workers
alive (as stale devices). A tensor of a closed cluster then raises a TensorFlow error
(``No worker known as ...``, ``unknown device``) instead of crashing.

The process serves its own end at one address for its whole life (TensorFlow binds
its server once); :func:`client_address` keeps it. After every change the resets
registered in :mod:`allreduce.core.runtime_hooks` run.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Mapping, Sequence

from allreduce.cluster.supervisor import LOOPBACK, free_ports
from allreduce.core.runtime_hooks import context_changed

__all__ = [
    "CLIENT_JOB",
    "attach",
    "claim",
    "client_address",
    "client_address_on",
    "detach",
    "owner",
    "release",
]

log = logging.getLogger("allreduce.cluster")

#: The job this process takes: its own devices keep their usual names.
CLIENT_JOB = "localhost"

_lock = threading.Lock()
_client: str | None = None
_owner: object | None = None
_stuck: threading.Thread | None = None


def owner() -> object | None:
    """The cluster this process is connected to, or ``None``."""
    return _owner


def claim(cluster: object) -> None:
    """Reserves the connection for ``cluster``.

    Raises:
        RuntimeError: another cluster holds it, or leaving an earlier one never finished.
    """
    global _owner
    with _lock:
        if _stuck is not None and _stuck.is_alive():
            raise RuntimeError(
                "leaving the previous cluster never finished (a worker of it does not answer); "
                "this process cannot connect again"
            )
        if _owner is not None:
            raise RuntimeError(f"this process is already connected to {_owner!r}; close it first")
        _owner = cluster


def release(cluster: object, stuck: threading.Thread | None = None) -> None:
    """Gives the connection up; ``stuck`` is a disconnect still waiting on a worker."""
    global _owner, _stuck
    with _lock:
        if _owner is cluster:
            _owner = None
        if stuck is not None:
            _stuck = stuck


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _port(address: str) -> str:
    return address.rsplit(":", 1)[1]


def client_address(workers: Sequence[str], requested: str | None) -> str:
    """The address this process serves at for a cluster of ``workers``.

    The first connection fixes its port; a ``requested`` address must keep it.

    Raises:
        ValueError: ``requested`` names another port than the one this process serves at,
            or workers on other hosts would have no address to reach this process at.
    """
    if requested is not None:
        if _client is not None and _port(requested) != _port(_client):
            raise ValueError(
                f"this process serves at {_client} (TensorFlow binds its port once per process); "
                f"got {CLIENT_JOB!r} address {requested!r}: use port {_port(_client)}"
            )
        return requested
    remote = [a for a in workers if not _is_loopback(a)]
    if remote:
        raise ValueError(
            f"workers on other hosts ({remote[0]!r}) need an address of this process they can reach: "
            f"add {{{CLIENT_JOB!r}: ['HOST:PORT']}} to the cluster spec"
        )
    return _client if _client is not None else f"{LOOPBACK}:{free_ports(1)[0]}"


def client_address_on(host: str) -> str:
    """``host:PORT`` with the port this process serves at, or a free one before its first connection."""
    return f"{host}:{_port(_client) if _client is not None else free_ports(1)[0]}"


def _server_def(jobs: Mapping[str, Sequence[str]], leader_job: str | None):
    from tensorflow.python.eager import context

    server_def = copy.deepcopy(context.get_server_def())
    del server_def.cluster.job[:]
    for name, addresses in jobs.items():
        job = server_def.cluster.job.add()
        job.name = name
        for task, address in enumerate(addresses):
            job.tasks[task] = address
    if leader_job is not None:  # cross-worker collectives need a group leader
        server_def.default_session_config.experimental.collective_group_leader = (
            f"/job:{leader_job}/replica:0/task:0"
        )
    return server_def


def attach(jobs: Mapping[str, Sequence[str]], job: str, client: str) -> None:
    """Connects this process, as job ``localhost`` at ``client``, to the cluster ``jobs``.

    Raises:
        tf.errors.OpError: a worker could not be reached.
    """
    global _client
    from tensorflow.python.eager import context

    from allreduce.core._tf import tf

    spec = {**{name: list(a) for name, a in jobs.items()}, CLIENT_JOB: [client]}
    if context.get_server_def() is None:
        tf.config.experimental_connect_to_cluster(tf.train.ClusterSpec(spec), job_name=CLIENT_JOB)
    else:
        context.context().update_server_def(_server_def(spec, job))
    _client = client
    context_changed()


def detach() -> None:
    """Drops every remote worker from this process's context (their devices stay valid)."""
    from tensorflow.python.eager import context

    if _client is not None and context.get_server_def() is not None:
        context.context().update_server_def(_server_def({CLIENT_JOB: [_client]}, None))
    context_changed()
