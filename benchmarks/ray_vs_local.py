"""``ray_cluster`` against ``local_cluster``: all-reduce time, start-up, time to a WorkerError.

Two measuring processes, one per backend (a process joins one cluster at a time), each
with 2 workers x 2 logical CPUs and one float32 tensor per device. The parent sends them
batches of timed steps in turn (local, Ray, local, Ray, ...), so that background load
hits both alike, and prints the medians and their ratio. A timed step is the all-reduce
in a ``tf.function`` that returns the first element of each output on its device,
drained with ``np.asarray`` (as ``allreduce-bench`` times steps across workers).

    python benchmarks/ray_vs_local.py                      # 16 MiB, pscpu/pscpu and xring
    python benchmarks/ray_vs_local.py --rounds 7 --batch 3 --faults
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _child(backend: str, mib: int, specs: list[str]) -> None:
    import numpy as np
    import tensorflow as tf

    import allreduce
    from allreduce.cluster import local_cluster, ray_cluster

    start = time.perf_counter()
    opener = ray_cluster(2, 2) if backend == "ray" else local_cluster(2, 2)
    with opener as cluster:
        startup = time.perf_counter() - start
        devices = [d for worker in cluster.devices for d in worker]
        length = mib * (1 << 20) // 4
        tensors = []
        for i, device in enumerate(devices):
            with tf.device(device):
                tensors.append(tf.identity(tf.fill([length], float(i + 1))))
        steps = {}
        for spec in specs:

            def witness(spec=spec):
                out = allreduce.all_reduce(tensors, spec, devices=devices)
                firsts = []
                for device, value in zip(devices, out):
                    with tf.device(device):
                        firsts.append(value[:1])
                return firsts

            steps[spec] = tf.function(witness, autograph=False)
            got = [float(np.asarray(v)[0]) for v in cluster.run(steps[spec])]
            assert got == [10.0] * 4, got
        print(_MARK + json.dumps({"startup_s": startup}), flush=True)
        for line in sys.stdin:
            spec, count = line.split()
            times = []
            for _ in range(int(count)):
                t0 = time.perf_counter()
                for value in cluster.run(steps[spec]):
                    np.asarray(value)
                times.append(time.perf_counter() - t0)
            print(_MARK + json.dumps(times), flush=True)


def _fault_child(how: str) -> None:
    import tensorflow as tf

    import allreduce
    from allreduce.cluster import WorkerError, ray_cluster

    with ray_cluster(2, 1) as cluster:
        devices = [d for worker in cluster.devices for d in worker]
        tensors = []
        for i, device in enumerate(devices):
            with tf.device(device):
                tensors.append(tf.identity(tf.fill([1 << 18], float(i + 1))))
        fn = tf.function(lambda: [t[:1] for t in allreduce.all_reduce(tensors, "xring", devices=devices)])
        cluster.run(fn)
        hit: dict = {}

        def inject() -> None:
            time.sleep(1.0)
            hit["at"] = time.monotonic()
            cluster.kill(1, None if how == "ray.kill" else getattr(signal, how))

        threading.Thread(target=inject, daemon=True).start()
        try:
            while True:
                cluster.run(fn)
        except WorkerError as err:
            seconds = time.monotonic() - hit["at"]
            print(_MARK + json.dumps({"how": how, "seconds": seconds, "reason": err.reason}), flush=True)


_MARK = "RESULT "


def _read_json(child: subprocess.Popen):
    """The child's next JSON line (Ray also prints its own messages to a driver's stdout)."""
    for line in child.stdout:
        if _MARK in line:  # Ray's messages may share the line
            return json.JSONDecoder().raw_decode(line, line.index(_MARK) + len(_MARK))[0]
    raise RuntimeError(f"a measuring process ended early (status {child.wait()})")


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=16, help="MiB per device (default %(default)s)")
    parser.add_argument("--specs", default="pscpu/pscpu,xring")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--batch", type=int, default=3, help="steps per batch (default %(default)s)")
    parser.add_argument("--faults", action="store_true", help="also time ray.kill, SIGKILL and SIGSTOP")
    args = parser.parse_args()
    children = {}
    for backend in ("local", "ray"):  # one after the other, so that each start-up is timed alone
        child = children[backend] = _spawn("--child", backend, str(args.mib), args.specs)
        print(f"{backend}: started in {_read_json(child)['startup_s']:.1f} s", flush=True)
    times: dict = {}
    for _ in range(args.rounds):
        for spec in args.specs.split(","):
            for backend, child in children.items():
                child.stdin.write(f"{spec} {args.batch}\n")
                child.stdin.flush()
                times.setdefault((spec, backend), []).extend(_read_json(child))
    for child in children.values():
        child.stdin.close()
        child.wait()
    print(f"{args.mib} MiB per device, 2 workers x 2 CPUs, median of {args.rounds * args.batch} steps")
    for spec in args.specs.split(","):
        local, ray = (statistics.median(times[(spec, b)]) for b in ("local", "ray"))
        print(f"{spec:12s} local {local * 1e3:7.1f} ms   ray {ray * 1e3:7.1f} ms   ratio {ray / local:.2f}")
    if args.faults:
        for how in ("ray.kill", "SIGKILL", "SIGSTOP"):
            child = _spawn("--fault", how)
            print(_read_json(child), flush=True)
            child.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","))
    elif sys.argv[1:2] == ["--fault"]:
        _fault_child(sys.argv[2])
    else:
        main()
