"""The client side of the Ray tests, run in its own process (connecting changes a process's
eager context for good), joining the test process's Ray instance at ``args["address"]``:

    python _client.py SCENARIO ARGS_JSON OUT_DIR

It writes ``OUT_DIR/result.json`` and ``OUT_DIR/arrays.npz`` like the multi-worker client.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import ray
import tensorflow as tf

import allreduce
from allreduce.cluster import WorkerError, ray_cluster
from tests.multiworker._recording import Recorder, attempt, integer_valued, place

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_training.py"
FAULTS = {"ray.kill": None, "SIGKILL": signal.SIGKILL, "SIGSTOP": signal.SIGSTOP}


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_gone(pids: list[int], bound_s: float) -> list[int]:
    deadline = time.monotonic() + bound_s
    while any(not _gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


def _sums(cluster, rec: Recorder, rng: np.random.Generator, length: int) -> None:
    devices = [d for worker in cluster.devices for d in worker]
    values = [integer_valued(rng, [length], "float32") for _ in devices]
    rec.manifest["inputs"] = [rec.array(v) for v in values]
    tensors = [place(v, d) for v, d in zip(values, devices)]
    for spec in ("pscpu/pscpu", "xring"):

        def eager(spec=spec):
            out = cluster.run(allreduce.all_reduce, tensors, spec)
            return [[t] for t in out], [[t.device] for t in out]

        def traced(spec=spec):
            fn = tf.function(lambda *xs: allreduce.all_reduce(list(xs), spec, devices=devices))
            out = cluster.run(fn, *tensors)
            return [[t] for t in out], [[d] for d in devices]

        rec.case(f"eager {spec}", eager)
        rec.case(f"function {spec}", traced)


def _example():
    spec = importlib.util.spec_from_file_location("ray_training", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def _training(cluster, args: dict, rec: Recorder) -> None:
    example = _example()
    batches = [(np.array(x, np.float64), np.array(y, np.float64)) for x, y in args["batches"]]
    initial = [np.array(w, np.float64) for w in args["initial"]]
    history = example.train(cluster, batches, initial, "pscpu/pscpu", lr=args["lr"])
    devices = [d for worker in cluster.devices for d in worker]
    pipelines = example.worker_pipelines(devices, batches)
    pipeline_devices = [p._iterator_resource.device for p in pipelines]
    reference = example.train_single_device(batches, initial, lr=args["lr"])
    rec.manifest["training"] = {
        "replicas_identical": history.replicas_identical,
        "pipeline_devices": pipeline_devices,
        "weights": [rec.array(w) for w in history.weights],
        "reference": [rec.array(w) for w in reference],
    }


def _fault(cluster, how: str, length: int) -> dict:
    """A loop of ``run`` calls and one of direct calls; the fault ``how`` hits worker 1 under both."""
    devices = [d for worker in cluster.devices for d in worker]
    tensors = [place(np.full([length], float(i + 1), np.float32), d) for i, d in enumerate(devices)]
    fn = tf.function(lambda *xs: allreduce.all_reduce(list(xs), "xring", devices=devices))
    expected = np.full([length], sum(range(1, len(devices) + 1)), np.float32)
    first_ok = all(np.array_equal(t.numpy(), expected) for t in fn(*tensors))
    record: dict = {"pids": cluster.pids, "first_ok": first_ok}
    looping, hit = threading.Event(), {}

    def direct_loop() -> None:
        try:
            while True:
                fn(*tensors)[0].numpy()
                looping.set()
        except Exception as err:
            hit["direct"] = {"error": type(err).__name__, "seconds": time.monotonic() - hit["at"]}

    direct = threading.Thread(target=direct_loop, daemon=True)
    direct.start()

    def inject() -> None:
        looping.wait(60)
        time.sleep(0.3)
        hit["at"] = time.monotonic()
        cluster.kill(1, FAULTS[how])

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    try:
        while True:
            cluster.run(lambda: fn(*tensors)[0].numpy())
    except WorkerError as err:
        record.update(error="WorkerError", task=err.task, reason=err.reason, message=str(err))
        record["seconds"] = time.monotonic() - hit["at"]
    except Exception as err:
        record["error"] = f"unexpected {type(err).__name__}: {err}"
    injector.join(30)
    direct.join(30)
    record["direct_pending"] = hit.get("direct", "still waiting after 30 s")
    start = time.monotonic()
    record["direct_later"] = attempt(lambda: fn(*tensors)[0].numpy())
    record["direct_later_seconds"] = time.monotonic() - start
    record["refuses_after_fault"] = attempt(lambda: cluster.run(lambda: None))["raised"] == "WorkerError"
    record["process_gone_in_cluster"] = _wait_gone([cluster.pids[1]], 10) == []
    return record


def scenario_workers(args: dict, rec: Recorder) -> None:
    """Sums and training on one cluster, ended by ``ray.kill``; then a killed and a frozen worker."""
    rng = np.random.default_rng(args["seed"])
    groups = []
    with ray_cluster(2, 2, address=args["address"]) as cluster:
        rec.manifest["devices"] = cluster.devices
        rec.manifest["cluster_spec"] = cluster.cluster_spec
        rec.manifest["nodes"] = [list(n) for n in cluster.nodes]
        rec.manifest["actors"] = len(cluster.actors)
        rec.manifest["node_of_driver"] = ray.get_runtime_context().get_node_id()
        _sums(cluster, rec, rng, args["length"])
        _training(cluster, args, rec)
        groups.append(cluster._pg.id.hex())
        rec.manifest["ray.kill"] = _fault(cluster, "ray.kill", args["fault_length"])
    rec.manifest["ray_left_initialized"] = ray.is_initialized()
    ray.init(address=args["address"])
    for how, unresponsive_s in (("SIGKILL", 5.0), ("SIGSTOP", args["unresponsive_s"])):
        with ray_cluster(2, 1, unresponsive_s=unresponsive_s) as cluster:
            groups.append(cluster._pg.id.hex())
            rec.manifest[how] = _fault(cluster, how, args["fault_length"])
    pids = [p for how in FAULTS for p in rec.manifest[how]["pids"]]
    rec.manifest["alive_after_exit"] = [p for p in pids if not _gone(p)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the example's command line, on the same Ray
        _example().main(["--address", args["address"], "--steps", "4"])
    rec.manifest["cli_output"] = out.getvalue()
    table = ray.util.placement_group_table()
    rec.manifest["group_states"] = [table.get(g, {}).get("state") for g in groups]
    rec.manifest["ray_still_initialized"] = ray.is_initialized()


SCENARIOS = {"workers": scenario_workers}


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
