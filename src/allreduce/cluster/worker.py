"""One worker process of :func:`allreduce.cluster.local_cluster`.

Run as ``python -m allreduce.cluster.worker CLUSTER_JSON TASK CPUS PARENT_PID``. It starts a
``tf.distribute.Server`` for ``/job:worker/task:TASK`` with ``CPUS`` logical CPUs, writes
``ready`` on stdout, then a heartbeat line every :data:`HEARTBEAT_S` seconds.

It never outlives the process that started it. On Linux, its first act asks the kernel
to send it ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), which reaches
it even while it is stopped (``SIGSTOP``) or busy; it then checks that the parent is
still the one it was started by, since the parent may have died before the request.
Strictly, the kernel watches the parent *thread* that started the process. Elsewhere,
and as a second line, it exits when its stdin reaches end-of-file (the parent closed
the pipe or died) or its parent changes.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
from typing import Any

HEARTBEAT_S = 0.25
JOB_NAME = "worker"
#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> bool:
    """Asks Linux to kill this process when ``parent`` dies; exits at once if it already has.

    Returns whether the kernel took the request (``False`` on other systems).
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            armed = False
    if os.getppid() != parent:  # the parent died before the request: nobody would send it
        os._exit(1)
    return armed


def start_server(cluster: dict[str, list[str]], task: int, cpus: int, job: str = JOB_NAME) -> Any:
    """Starts this process's ``tf.distribute.Server`` for ``/job:JOB/task:TASK`` with
    ``cpus`` logical CPUs (and every GPU TensorFlow sees); returns it.

    Raises:
        tf.errors.OpError: the server could not start (e.g. its port is taken).
    """
    from allreduce.core._tf import tf

    return tf.distribute.Server(
        tf.train.ClusterSpec(cluster),
        job_name=job,
        task_index=task,
        config=tf.compat.v1.ConfigProto(device_count={"CPU": cpus}),
        start=True,
    )


def main(argv: list[str]) -> None:  # pragma: no cover - runs in the worker processes
    parent = int(argv[3])
    die_with_parent(parent)
    cluster, task, cpus = json.loads(argv[0]), int(argv[1]), int(argv[2])
    stdin = sys.stdin.buffer.fileno()
    out = sys.stdout.buffer
    start_server(cluster, task, cpus)
    try:
        out.write(b"ready\n")
        out.flush()
        while os.getppid() == parent:
            readable, _, _ = select.select([stdin], [], [], HEARTBEAT_S)
            if readable and not os.read(stdin, 4096):
                break
            out.write(b".\n")
            out.flush()
    except OSError:  # the parent closed the heartbeat pipe
        pass
    # The server has no clean shutdown; leave at once rather than wait on its threads.
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
