"""Training one model across worker processes, driven by one client, in a custom loop.

Every device of every worker holds a replica of a small two-layer network. Each step,
each replica computes the gradients of its slice of the global batch;
``allreduce.batch_all_reduce`` sums them with a hierarchical spec (``pscpu/pscpu``:
within each worker first, then across workers), and every replica applies the same
sums, so the replicas stay bitwise identical without ever copying weights. The step
runs inside ``cluster.run``, which bounds it and names a worker that dies or freezes.

Each device reads its slice of every batch from an input pipeline (``tf.data``) whose
iterator lives on that device's worker, so no batch travels from the client during
training; here the pipelines hold the synthetic data, in practice they would read files
that the workers can reach.

TensorFlow refuses ``MirroredStrategy`` over remote devices in eager mode, so Keras
``fit`` across workers has only ``MultiWorkerMirroredStrategy``'s collectives; a loop
like this one can use any spec of this library.

    python examples/multiworker_training.py                  # 2 workers x 2 CPUs, pscpu/pscpu
    python examples/multiworker_training.py --workers 3 --devices 1 --spec xring --steps 50
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import allreduce
from allreduce.cluster import Cluster, local_cluster

FEATURES, HIDDEN = 8, 16
PER_DEVICE_BATCH = 16


def make_batches(steps: int, batch: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` global batches ``(x, y)`` of a random two-layer teacher network, float32."""
    rng = np.random.default_rng(seed)
    teacher_in = rng.standard_normal((FEATURES, HIDDEN))
    teacher_out = rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN)
    batches = []
    for _ in range(steps):
        x = rng.standard_normal((batch, FEATURES))
        y = np.maximum(x @ teacher_in, 0) @ teacher_out
        batches.append((x.astype(np.float32), y.astype(np.float32)))
    return batches


def initial_weights(seed: int) -> list[np.ndarray]:
    """``[w1, b1, w2, b2]`` of the student network, float32."""
    rng = np.random.default_rng(seed)
    return [
        rng.normal(0, FEATURES**-0.5, (FEATURES, HIDDEN)).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        rng.normal(0, HIDDEN**-0.5, (HIDDEN, 1)).astype(np.float32),
        np.zeros(1, np.float32),
    ]


def loss_fn(weights: Sequence[tf.Variable], x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Mean squared error of ``relu(x w1 + b1) w2 + b2`` against ``y``."""
    w1, b1, w2, b2 = weights
    prediction = tf.nn.relu(x @ w1 + b1) @ w2 + b2
    return tf.reduce_mean(tf.square(prediction - y))


class History(NamedTuple):
    losses: list[float]
    replicas_identical: list[bool]
    weights: list[np.ndarray]


def _replicas(devices: Sequence[str], initial: Sequence[np.ndarray]) -> list[list[tf.Variable]]:
    replicas = []
    for device in devices:
        with tf.device(device):
            replicas.append([tf.Variable(w) for w in initial])
    return replicas


def _distributed_step(devices: Sequence[str], replicas: list[list[tf.Variable]], spec: str, lr: float):
    n = len(devices)

    @tf.function(autograph=False)  # plain Python loops over devices, unrolled when traced
    def step(xs: list[tf.Tensor], ys: list[tf.Tensor]) -> tf.Tensor:
        towers, losses = [], []
        for device, weights, x, y in zip(devices, replicas, xs, ys):
            with tf.device(device):
                with tf.GradientTape() as tape:
                    loss = loss_fn(weights, x, y)
                    scaled = loss / n  # the sum over replicas is then the global mean's gradient
                towers.append(tape.gradient(scaled, weights))
                losses.append(loss)
        summed = allreduce.batch_all_reduce(towers, spec, devices=devices)
        for device, weights, grads in zip(devices, replicas, summed):
            with tf.device(device):
                for weight, grad in zip(weights, grads):
                    weight.assign_sub(lr * grad)
        return tf.add_n(losses) / n

    return step


def worker_pipelines(devices: Sequence[str], batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> list:
    """One ``tf.data`` iterator per device, created on that device's worker, yielding the
    device's slice ``(x, y)`` of each global batch in turn (slices split evenly, in device order)."""
    n = len(devices)
    iterators = []
    for i, device in enumerate(devices):
        xs = np.stack([np.split(x, n)[i] for x, _ in batches])
        ys = np.stack([np.split(y, n)[i] for _, y in batches])
        with tf.device(device):
            iterators.append(iter(tf.data.Dataset.from_tensor_slices((xs, ys))))
    return iterators


def train(
    cluster: Cluster,
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    initial: Sequence[np.ndarray],
    spec: str = "pscpu/pscpu",
    lr: float = 0.1,
    device_type: str = "CPU",
) -> History:
    """SGD with one replica per device of ``device_type`` of ``cluster``, each reading its
    slice of every global batch (split evenly in device order) from a pipeline on its
    worker. Returns the losses, whether the replicas were bitwise identical after each
    step, and the final weights."""
    devices = [d for worker in cluster.devices_of(device_type) for d in worker]
    replicas = _replicas(devices, initial)
    sgd_step = _distributed_step(devices, replicas, spec, lr)
    pipelines = worker_pipelines(devices, batches)

    @tf.function(autograph=False)
    def step() -> tf.Tensor:
        xs, ys = [], []
        for device, pipeline in zip(devices, pipelines):
            with tf.device(device):
                x, y = next(pipeline)
            xs.append(x)
            ys.append(y)
        return sgd_step(xs, ys)

    history = History([], [], [])
    for _ in batches:
        history.losses.append(float(cluster.run(step)))
        values = cluster.run(lambda: [[w.numpy() for w in replica] for replica in replicas])
        history.replicas_identical.append(all(_same(v, values[0]) for v in values))
    history.weights.extend(values[0])
    return history


def _same(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    return all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


def train_single_device(
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    initial: Sequence[np.ndarray],
    lr: float = 0.1,
    device: str = "/job:localhost/replica:0/task:0/device:CPU:0",
) -> list[np.ndarray]:
    """The same SGD on one device, each global batch whole: the reference."""
    with tf.device(device):
        weights = [tf.Variable(w) for w in initial]

    @tf.function(autograph=False)
    def step(x: tf.Tensor, y: tf.Tensor) -> None:
        with tf.device(device), tf.GradientTape() as tape:
            loss = loss_fn(weights, x, y)
        for weight, grad in zip(weights, tape.gradient(loss, weights)):
            weight.assign_sub(lr * grad)

    for x, y in batches:
        step(tf.constant(x), tf.constant(y))
    return [w.numpy() for w in weights]


def print_report(history: History, reference: Sequence[np.ndarray], seconds: float) -> None:
    """Prints the mean loss every 10 steps, whether the replicas stayed bitwise identical,
    and the largest difference from the single-device ``reference`` weights."""
    print("steps      mean loss")
    for first in range(0, len(history.losses), 10):
        window = history.losses[first : first + 10]
        print(f"{first:3d}-{first + len(window) - 1:3d}    {np.mean(window):.4f}")
    print(f"replicas bitwise identical after every step: {all(history.replicas_identical)}")
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(history.weights, reference))
    print(f"largest difference from training on one device: {gap:.3g}")
    print(f"{len(history.losses)} steps in {seconds:.1f} s (with starting the workers)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default %(default)s)")
    parser.add_argument("--devices", type=int, default=2, help="CPUs per worker (default %(default)s)")
    parser.add_argument("--spec", default="pscpu/pscpu", help="all-reduce spec (default %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="training steps (default %(default)s)")
    args = parser.parse_args(argv)
    replicas = args.workers * args.devices
    batches = make_batches(args.steps, PER_DEVICE_BATCH * replicas, seed=0)
    initial = initial_weights(seed=1)
    start = time.perf_counter()
    with local_cluster(args.workers, args.devices) as cluster:
        print(f"{replicas} replicas on {args.workers} workers, spec {args.spec!r}")
        history = train(cluster, batches, initial, args.spec)
    print_report(history, train_single_device(batches, initial), time.perf_counter() - start)


if __name__ == "__main__":
    main()
