"""The client side of the multi-worker tests, run in its own process.

Connecting to a cluster changes a process's eager context for good, so every test that
connects runs this script in a process of its own (a fork of tests/forkserver.py's server):

    python _client.py SCENARIO ARGS_JSON OUT_DIR

It writes ``OUT_DIR/result.json`` (a manifest) and ``OUT_DIR/arrays.npz`` (inputs and
outputs as float64); the test compares them with the numpy oracle. A scenario records
failures instead of stopping, so that one broken spec does not hide the others. The
scenarios of a cluster's life (closing, freezing, ``connect``, training) are in
``_scenarios.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import allreduce
from allreduce.cluster import WorkerError, local_cluster
from tests.multiworker._recording import Recorder, integer_valued, place, tensor_values
from tests.multiworker._scenarios import (
    scenario_connect,
    scenario_lifecycle,
    scenario_resolvers,
    scenario_training,
)


def loopback_connections(pids: list[int]) -> list[list[str]]:
    """``[local, remote]`` of every TCP connection the processes hold, from /proc."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if inode in inodes and state == "01":  # ESTABLISHED
                    found.append([_address(local), _address(remote)])
    return found


def _address(entry: str) -> str:
    host, port = entry.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ".".join(str(b) for b in raw[::-1])
    else:  # four little-endian 32-bit words; IPv4-mapped ends in ffff:a.b.c.d
        words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
        flat = b"".join(words)
        ip = ".".join(str(b) for b in flat[12:]) if flat[:12] == b"\0" * 10 + b"\xff\xff" else flat.hex()
    return f"{ip}:{int(port, 16)}"


LOCAL_CPUS = 3


def local_collective(rec: Recorder, when: str) -> None:
    """``collective`` over this process's own logical CPUs, before, during and after a cluster."""
    local = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(LOCAL_CPUS)]
    values = [np.full([7], float(i + 1), np.float32) for i in range(LOCAL_CPUS)]

    def one():
        out = allreduce.all_reduce([place(v, d) for v, d in zip(values, local)], "collective", timeout_s=30)
        return [[t] for t in out], [[t.device] for t in out]

    rec.case(f"local collective {when}", one)


def scenario_sums(args: dict, rec: Recorder) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * LOCAL_CPUS)
    local_collective(rec, "before")
    rng = np.random.default_rng(args["seed"])
    length = args["length"]
    with local_cluster(args["workers"], args["per_worker"], op_timeout_s=60) as cluster:
        local_collective(rec, "during")
        devices = [d for worker in cluster.devices for d in worker]
        rec.manifest["devices"] = devices
        rec.manifest["pids"] = cluster.pids
        rec.manifest["addresses"] = cluster.addresses
        values = [integer_valued(rng, [length], "float32") for _ in devices]
        rec.manifest["inputs"] = [rec.array(v) for v in values]
        tensors = [place(v, d) for v, d in zip(values, devices)]

        for spec in args["specs"]:

            def one(spec=spec):
                out = cluster.run(allreduce.all_reduce, tensors, spec)
                return [[t] for t in out], [[t.device] for t in out]

            rec.case(f"eager {spec}", one)

        for spec in args["function_specs"]:

            def traced(spec=spec):
                fn = tf.function(lambda *xs: allreduce.all_reduce(list(xs), spec, devices=devices))
                out = cluster.run(fn, *tensors)
                return [[t] for t in out], [[devices[i]] for i in range(len(out))]

            rec.case(f"function {spec}", traced)

        shapes = [([3], "float32"), ([5, 4], "float32"), ([1], "float64"), ([300], "float32")]
        shapes.append(([2, 2], "int32"))
        towers_np = [[integer_valued(rng, s, dt) for s, dt in shapes] for _ in devices]
        rec.manifest["batch_inputs"] = [[rec.array(v) for v in tower] for tower in towers_np]
        towers = [[place(v, d) for v in tower] for tower, d in zip(towers_np, devices)]
        for spec in args["batch_specs"]:

            def batch(spec=spec):
                out = cluster.run(
                    allreduce.batch_all_reduce, towers, spec, pack_max_bytes=64, pack_max_group=3
                )
                return out, [[t.device for t in row] for row in out]

            rec.case(f"batch {spec}", batch)

        prefixes = allreduce.build_all_reduce_device_prefixes("worker", args["workers"])
        for alg, shards in args["compat_algs"]:

            def compat(alg=alg, shards=shards):
                grads = [[(t, f"var{i}") for i, t in enumerate(tower)] for tower in towers]
                new, packing = cluster.run(
                    allreduce.sum_gradients_all_reduce,
                    prefixes,
                    grads,
                    args["workers"],
                    alg,
                    shards,
                    [],
                    agg_small_grads_max_bytes=64,
                )
                if packing is not None:
                    new = allreduce.unpack_small_tensors(new, packing)
                names = [[var for _, var in tower] for tower in new]
                assert names == [[f"var{i}" for i in range(len(shapes))]] * len(devices), names
                grads = [[g for g, _ in tower] for tower in new]
                return grads, [[g.device for g in tower] for tower in grads]

            rec.case(f"compat {alg}#{shards}", compat)

        rec.manifest["connections"] = loopback_connections([os.getpid(), *cluster.pids])
    rec.manifest["pids_after"] = {str(p): os.path.exists(f"/proc/{p}") for p in cluster.pids}
    local_collective(rec, "after")


def _fault_once(args: dict, rec: Recorder, how: str) -> None:
    """One cluster; a loop of large all-reduces; worker 1 killed or frozen mid-loop."""
    rng = np.random.default_rng(args["seed"])
    record: dict = {}
    with local_cluster(2, 2, op_timeout_s=args["op_timeout_s"]) as cluster:
        devices = [d for worker in cluster.devices for d in worker]
        values = [integer_valued(rng, [args["length"]], "float32") for _ in devices]
        copies = [v.copy() for v in values]
        tensors = [place(v, d) for v, d in zip(values, devices)]
        first = cluster.run(allreduce.all_reduce, tensors, args["alg"])
        expected = np.sum(np.stack(values).astype(np.float64), axis=0)
        record["first_ok"] = all(np.array_equal(tensor_values(t), expected) for t in first)
        record["pids"] = cluster.pids
        started = threading.Event()
        stop = threading.Event()

        def loop() -> int:
            count = 0
            while not stop.is_set():
                out = allreduce.all_reduce(tensors, args["alg"])
                np.asarray(out[0].numpy()[:1])
                count += 1
                started.set()
            return count

        def inject() -> None:
            started.wait(60)
            time.sleep(0.1)  # land inside the next all-reduce
            record["injected_at"] = time.monotonic()
            cluster.kill(1, signal.SIGKILL if how == "kill" else signal.SIGSTOP)

        injector = threading.Thread(target=inject, daemon=True)
        injector.start()
        try:
            count = cluster.run(loop)
            record["error"] = None
            record["count"] = count
        except WorkerError as err:
            record["seconds_after_fault"] = time.monotonic() - record.get("injected_at", float("nan"))
            record["error"] = type(err).__name__
            record["task"] = err.task
            record["reason"] = err.reason
            record["message"] = str(err)
            record["cause"] = type(err.__cause__).__name__ if err.__cause__ else None
        except Exception as err:
            record["error"] = f"unexpected {type(err).__name__}: {err}"
        finally:
            stop.set()
        injector.join(10)
        record["inputs_unchanged"] = all(np.array_equal(v, c) for v, c in zip(values, copies))
        # Inputs that live on the surviving worker are still intact there. The cluster
        # refuses new calls after a fault, so read them directly, with a bound. Reads
        # queue behind the ops that wait for a frozen worker: end those first.
        if how == "stop":
            cluster.kill(1)
        survivors: list = []
        reader = threading.Thread(
            target=lambda: survivors.extend(tensor_values(t) for t in tensors[:2]), daemon=True
        )
        reader.start()
        reader.join(30)
        if reader.is_alive():
            record["survivor_inputs_equal"] = "not read within 30 s"
        else:
            record["survivor_inputs_equal"] = len(survivors) == 2 and all(
                np.array_equal(s, c) for s, c in zip(survivors, copies)
            )
        try:
            cluster.run(lambda: None)
            record["refuses_after_fault"] = False
        except WorkerError:
            record["refuses_after_fault"] = True
    record["alive_after_exit"] = [p for p in record["pids"] if os.path.exists(f"/proc/{p}")]
    rec.manifest[how] = record


def scenario_faults(args: dict, rec: Recorder) -> None:
    _fault_once(args, rec, "kill")
    _fault_once(args, rec, "stop")
    # The calling process is still usable: a new cluster sums correctly.
    with local_cluster(2, 1) as cluster:
        devices = [d for worker in cluster.devices for d in worker]
        tensors = [place(np.full([5], float(i + 1), np.float32), d) for i, d in enumerate(devices)]
        out = cluster.run(allreduce.all_reduce, tensors, args["alg"])
        rec.manifest["after"] = [tensor_values(t).tolist() for t in out]


SCENARIOS = {
    "sums": scenario_sums,
    "faults": scenario_faults,
    "lifecycle": scenario_lifecycle,
    "training": scenario_training,
    "connect": scenario_connect,
    "resolvers": scenario_resolvers,
}


def main() -> None:
    scenario, args, out_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    rec = Recorder()
    try:
        SCENARIOS[scenario](args, rec)
    except Exception:
        rec.manifest["fatal"] = traceback.format_exc()
    rec.save(out_dir)


if __name__ == "__main__":
    main()
