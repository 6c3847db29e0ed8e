"""Training one model in SPMD mode: every worker runs this program on its own shard.

Each worker process (started by ``allreduce.spmd.launch``, or by Slurm, Kubernetes or
by hand with ``TF_CONFIG`` set) holds one replica of a small two-layer network per
local device. Each step, every worker takes its own shard of the global batch, splits
it over its devices, computes the gradients, and ``allreduce.spmd.batch_all_reduce``
sums them over every device of every worker with the spec; every replica applies the
same sums, so replicas stay bitwise identical on every worker without copying weights.

    python examples/spmd_training.py                          # 2 workers x 2 CPUs, pscpu/xring
    python examples/spmd_training.py --workers 4 --devices 1 --spec rechd --steps 50
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import time
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

FEATURES, HIDDEN = 8, 16
PER_DEVICE_BATCH = 16


def make_batches(
    steps: int, batch: int, seed: int, dtype: str = "float32"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` global batches ``(x, y)`` of a random two-layer teacher network."""
    rng = np.random.default_rng(seed)
    teacher_in = rng.standard_normal((FEATURES, HIDDEN))
    teacher_out = rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN)
    batches = []
    for _ in range(steps):
        x = rng.standard_normal((batch, FEATURES))
        y = np.maximum(x @ teacher_in, 0) @ teacher_out
        batches.append((x.astype(dtype), y.astype(dtype)))
    return batches


def initial_weights(seed: int, dtype: str = "float32") -> list[np.ndarray]:
    """``[w1, b1, w2, b2]`` of the student network."""
    rng = np.random.default_rng(seed)
    return [
        rng.normal(0, FEATURES**-0.5, (FEATURES, HIDDEN)).astype(dtype),
        np.zeros(HIDDEN, dtype),
        rng.normal(0, HIDDEN**-0.5, (HIDDEN, 1)).astype(dtype),
        np.zeros(1, dtype),
    ]


def loss_fn(weights, x, y):
    """Mean squared error of ``relu(x w1 + b1) w2 + b2`` against ``y``."""
    import tensorflow as tf

    w1, b1, w2, b2 = weights
    prediction = tf.nn.relu(x @ w1 + b1) @ w2 + b2
    return tf.reduce_mean(tf.square(prediction - y))


def _digest(replicas) -> str:
    return hashlib.sha256(b"".join(w.numpy().tobytes() for replica in replicas for w in replica)).hexdigest()


def train(
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    initial: Sequence[np.ndarray],
    spec: str = "pscpu/xring",
    lr: float = 0.1,
) -> dict:
    """One worker's SPMD training; call it on every worker. Returns this worker's losses,
    a digest of all its replicas' weights after each step (equal on every worker when
    replicas stay identical) and its first replica's final weights."""
    from allreduce import spmd

    worker = spmd.start()
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU") if worker.device_prefix in d.name]
    replicas = []
    for device in devices:
        with tf.device(device):
            replicas.append([tf.Variable(w) for w in initial])
    count = worker.num_workers * len(devices)

    @tf.function(autograph=False)
    def step(xs, ys):
        towers, losses = [], []
        for device, weights, x, y in zip(devices, replicas, xs, ys):
            with tf.device(device), tf.GradientTape() as tape:
                loss = loss_fn(weights, x, y)
                scaled = loss / count  # the sum over replicas is the global mean's gradient
            towers.append(tape.gradient(scaled, weights))
            losses.append(loss)
        summed = spmd.batch_all_reduce(towers, spec, devices=devices)
        for device, weights, grads in zip(devices, replicas, summed):
            with tf.device(device):
                for weight, grad in zip(weights, grads):
                    weight.assign_sub(lr * grad)
        return tf.add_n(losses) / len(devices)

    history: dict = {"losses": [], "digests": []}
    for x, y in batches:
        # This worker's shard of the global batch, split over its devices.
        xs, ys = [], []
        shards = zip(np.split(x, count), np.split(y, count))
        mine = list(shards)[worker.rank * len(devices) : (worker.rank + 1) * len(devices)]
        for device, (x_part, y_part) in zip(devices, mine):
            with tf.device(device):
                xs.append(tf.constant(x_part))
                ys.append(tf.constant(y_part))
        history["losses"].append(float(step(xs, ys)))
        history["digests"].append(_digest(replicas))
    history["weights"] = [w.numpy() for w in replicas[0]]
    return history


def train_single_device(batches, initial, lr: float = 0.1) -> list[np.ndarray]:
    """The same SGD on one device, each global batch whole: the reference."""
    import tensorflow as tf

    weights = [tf.Variable(w) for w in initial]

    @tf.function(autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(weights, x, y)
        for weight, grad in zip(weights, tape.gradient(loss, weights)):
            weight.assign_sub(lr * grad)

    for x, y in batches:
        step(tf.constant(x), tf.constant(y))
    return [w.numpy() for w in weights]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default %(default)s)")
    parser.add_argument("--devices", type=int, default=2, help="CPUs per worker (default %(default)s)")
    parser.add_argument("--spec", default="pscpu/xring", help="all-reduce spec (default %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="training steps (default %(default)s)")
    args = parser.parse_args(argv)
    from allreduce import spmd

    replicas = args.workers * args.devices
    batches = make_batches(args.steps, PER_DEVICE_BATCH * replicas, seed=0)
    initial = initial_weights(seed=1)
    start = time.perf_counter()
    fn = functools.partial(train, batches, initial, args.spec)
    histories = spmd.launch(fn, args.workers, devices_per_worker=args.devices)
    seconds = time.perf_counter() - start
    print(f"{replicas} replicas on {args.workers} workers, spec {args.spec!r}, {seconds:.1f} s with start-up")
    same = all(h["digests"] == histories[0]["digests"] for h in histories)
    print(f"replicas bitwise identical on every worker after every step: {same}")
    if "TF_CONFIG" not in os.environ:
        reference = train_single_device(batches, initial)
        gap = max(float(np.max(np.abs(a - b))) for a, b in zip(histories[0]["weights"], reference))
        print(f"largest difference from training on one device: {gap:.3g}")


if __name__ == "__main__":
    main()
