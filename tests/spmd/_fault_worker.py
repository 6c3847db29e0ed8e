"""One worker of the fault tests: ``python _fault_worker.py MODE VICTIM TIMEOUT_S``, with
``TF_CONFIG`` set. After one good all-reduce, worker ``VICTIM`` kills (``kill``) or
stops (``stop``) itself; the others all-reduce again and print one JSON line: the
seconds until the call failed, the error's type, its ``task`` and its message."""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main(mode: str, victim: int, timeout_s: float) -> None:
    from allreduce import spmd

    worker = spmd.start()
    import tensorflow as tf

    x = tf.constant([float(worker.rank + 1)] * 1000)
    first = spmd.all_reduce([x], "xring", timeout_s=timeout_s)
    print(json.dumps({"first": float(first[0][0])}), flush=True)
    if worker.rank == victim:
        os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
    time.sleep(0.5)
    start = time.monotonic()
    try:
        out = spmd.all_reduce([x], "xring", timeout_s=timeout_s)
        result = {"sum": float(out[0][0])}
    except Exception as err:
        result = {"type": type(err).__name__, "task": getattr(err, "task", None), "message": str(err)[:2000]}
    result["seconds"] = time.monotonic() - start
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
