"""One worker process of :func:`allreduce.cluster.local_cluster`.

Run as ``python -m allreduce._worker CLUSTER_JSON TASK CPUS PARENT_PID``. It starts a
``tf.distribute.Server`` for ``/job:worker/task:TASK`` with ``CPUS`` logical CPUs, writes
``ready`` on stdout, then a heartbeat line every :data:`HEARTBEAT_S` seconds. It exits
as soon as its stdin reaches end-of-file (the parent closed the pipe or died) or its
parent changes, so that it never outlives the process that started it.
"""

from __future__ import annotations

import json
import os
import select
import sys

HEARTBEAT_S = 0.25
JOB_NAME = "worker"


def main(argv: list[str]) -> None:  # pragma: no cover - runs in the worker processes
    cluster, task, cpus, parent = json.loads(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    stdin = sys.stdin.buffer.fileno()
    out = sys.stdout.buffer
    from allreduce._tf import tf

    tf.distribute.Server(
        tf.train.ClusterSpec(cluster),
        job_name=JOB_NAME,
        task_index=task,
        config=tf.compat.v1.ConfigProto(device_count={"CPU": cpus}),
        start=True,
    )
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
