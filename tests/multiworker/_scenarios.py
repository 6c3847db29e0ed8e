"""Client scenarios of a cluster's life: tensors after closing, a worker frozen under direct
calls, ``connect`` to servers another process started (also through cluster resolvers),
and the training example."""

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
from pathlib import Path

import numpy as np
import tensorflow as tf

import allreduce
from allreduce.cluster import WorkerError, connect, local_cluster
from tests.multiworker._recording import Recorder, attempt, integer_valued, place, tensor_values

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def scenario_lifecycle(args: dict, rec: Recorder) -> None:
    """Tensors of a closed cluster, then a worker frozen under direct calls in the next one."""
    with local_cluster(2, 1) as first:
        devices = [d for worker in first.devices for d in worker]
        ts = [place(np.full([4], float(i + 1), np.float32), d) for i, d in enumerate(devices)]
        r = first.run(allreduce.all_reduce, ts, "xring")
        rec.manifest["inside"] = tensor_values(r[0]).tolist()
        rec.manifest["first_devices"] = devices
    closed = rec.manifest["closed"] = {}
    closed["numpy"] = attempt(lambda: r[0].numpy())
    closed["all_reduce"] = attempt(lambda: allreduce.all_reduce(ts, "xring"))
    closed["device"] = attempt(lambda: r[0].device)
    rec.manifest["frozen"] = _frozen_under_direct_calls(args, lambda: r[1].numpy(), closed)
    closed["numpy after the next cluster"] = attempt(lambda: r[1].numpy())


def _frozen_under_direct_calls(args: dict, touch_old, closed: dict) -> dict:
    """Direct ``tf.function`` calls, not through ``run``, while worker 1 is frozen."""
    rng = np.random.default_rng(args["seed"])
    record: dict = {}
    with local_cluster(2, 2, op_timeout_s=args["op_timeout_s"]) as cluster:
        closed["numpy during the next cluster"] = attempt(touch_old)
        devices = [d for worker in cluster.devices for d in worker]
        values = [integer_valued(rng, [args["length"]], "float32") for _ in devices]
        tensors = [place(v, d) for v, d in zip(values, devices)]
        fn = tf.function(lambda *xs: allreduce.all_reduce(list(xs), "xring", devices=devices))
        expected = np.sum(np.stack(values).astype(np.float64), axis=0)
        record["first_ok"] = all(np.array_equal(tensor_values(t), expected) for t in fn(*tensors))
        started, frozen_at = threading.Event(), {}

        def freeze() -> None:
            started.wait(60)
            time.sleep(0.05)  # land inside a call
            frozen_at["t"] = time.monotonic()
            cluster.kill(1, signal.SIGSTOP)

        threading.Thread(target=freeze, daemon=True).start()
        try:
            while True:
                np.asarray(fn(*tensors)[0].numpy()[:1])
                started.set()
        except Exception as err:
            record["pending_error"] = type(err).__name__
            record["pending_is_tensorflow_error"] = isinstance(err, tf.errors.OpError)
            record["pending_seconds"] = time.monotonic() - frozen_at.get("t", float("nan"))
        start = time.monotonic()
        record["later"] = attempt(lambda: fn(*tensors)[0].numpy())
        record["later_seconds"] = time.monotonic() - start
        record["run"] = attempt(lambda: cluster.run(lambda: None))
        try:
            cluster.check()
        except WorkerError as err:
            record["task"], record["reason"] = err.task, err.reason
        deadline = time.monotonic() + 10  # a killed process may take a moment to exit
        while not _gone(cluster.pids[1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        record["fenced"] = _gone(cluster.pids[1])
    return record


def scenario_training(args: dict, rec: Recorder) -> None:
    """The multi-worker training example: its command line, then exact float64 training."""
    path = EXAMPLES / "multiworker_training.py"
    spec = importlib.util.spec_from_file_location("multiworker_training", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        example.main(["--steps", str(args["cli_steps"])])
    rec.manifest["cli_output"] = out.getvalue()
    batches = [(np.array(x, np.float64), np.array(y, np.float64)) for x, y in args["batches"]]
    initial = [np.array(w, np.float64) for w in args["initial"]]
    with local_cluster(2, 2) as cluster:
        history = example.train(cluster, batches, initial, args["spec"], lr=args["lr"])
        rec.manifest["devices"] = [d for worker in cluster.devices for d in worker]
    reference = example.train_single_device(batches, initial, lr=args["lr"])
    rec.manifest["replicas_identical"] = history.replicas_identical
    rec.manifest["weights"] = [rec.array(w) for w in history.weights]
    rec.manifest["reference"] = [rec.array(w) for w in reference]


def _handshake(word: str) -> None:
    """Tells the test where this client is and waits until it has acted."""
    print(word, flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "go":
        raise RuntimeError(f"expected 'go' after {word!r}, got {answer!r}")


def _remote_devices() -> list[str]:
    return [d.name for d in tf.config.list_logical_devices() if "/job:worker/" in d.name]


def scenario_connect(args: dict, rec: Recorder) -> None:
    """``connect`` to servers another process started; the test freezes, then kills, a worker."""
    rng = np.random.default_rng(args["seed"])
    for name in ("frozen", "killed"):
        record = rec.manifest[name] = {}
        options = {"op_timeout_s": args["op_timeout_s"], "unresponsive_s": args["unresponsive_s"]}
        with connect(args["clusters"][name], **options) as cluster:
            record["devices"] = cluster.devices
            record["cluster_spec"] = cluster.cluster_spec
            record["no_process_api"] = not hasattr(cluster, "pids") and not hasattr(cluster, "kill")
            devices = [d for worker in cluster.devices for d in worker]
            values = [integer_valued(rng, [args["length"]], "float32") for _ in devices]
            record["inputs"] = [rec.array(v) for v in values]
            tensors = [place(v, d) for v, d in zip(values, devices)]
            out = cluster.run(allreduce.all_reduce, tensors, "pscpu/pscpu")
            record["outputs"] = [rec.array(tensor_values(t)) for t in out]
            record["output_devices"] = [t.device for t in out]
            _handshake(f"ready {name}")
            start = time.monotonic()
            try:
                cluster.run(allreduce.all_reduce, tensors, "pscpu/pscpu")
                record["error"] = None
            except WorkerError as err:
                record.update(error=type(err).__name__, task=err.task, reason=err.reason, message=str(err))
                record["seconds"] = time.monotonic() - start
            _handshake(f"faulted {name}")
        record["remote_devices_after"] = _remote_devices()


def _resolver(kind: str, args: dict):
    resolvers = tf.distribute.cluster_resolver
    if kind == "tf_config":
        os.environ["TF_CONFIG"] = json.dumps({"cluster": args["cluster_spec"]})
        return resolvers.TFConfigClusterResolver()
    return resolvers.SimpleClusterResolver(tf.train.ClusterSpec(args["cluster_spec"]))


def scenario_resolvers(args: dict, rec: Recorder) -> None:
    """``connect`` to ``allreduce-worker`` servers through each kind of cluster resolver, in turn."""
    rng = np.random.default_rng(args["seed"])
    for kind in args["resolvers"]:
        record = rec.manifest[kind] = {}
        with connect(_resolver(kind, args), op_timeout_s=args["op_timeout_s"]) as cluster:
            record["devices"] = cluster.devices
            record["cpus"] = cluster.devices_of("CPU")
            record["gpus"] = cluster.devices_of("GPU")
            record["cluster_spec"] = cluster.cluster_spec
            devices = [d for worker in cluster.devices_of("CPU") for d in worker]
            values = [integer_valued(rng, [args["length"]], "float32") for _ in devices]
            record["inputs"] = [rec.array(v) for v in values]
            tensors = [place(v, d) for v, d in zip(values, devices)]
            out = cluster.run(allreduce.all_reduce, tensors, "pscpu/pscpu")
            record["outputs"] = [rec.array(tensor_values(t)) for t in out]
            record["output_devices"] = [t.device for t in out]
