"""A custom training loop with one model replica per device, gradients summed by a spec.

Each step, every device computes the gradients of its own replica on its slice of the
global batch; ``allreduce.sum_gradients_all_reduce`` sums them (packing the small ones
into one tensor first), ``allreduce.unpack_small_tensors`` restores the layout, and each
replica applies its own summed gradients, which are bitwise identical on all devices, so
the replicas stay identical without ever copying weights.

    python examples/custom_loop.py                       # 4 logical CPUs, pscpu:256:xring#2
    python examples/custom_loop.py --spec rechd --steps 30 --max-bytes 0
"""

from __future__ import annotations

import argparse
import os
import time
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import allreduce

FEATURES, HIDDEN, CLASSES = 16, 32, 4
PER_DEVICE_BATCH = 32


def make_data(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels of a random two-layer teacher network."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, FEATURES)).astype(np.float32)
    hidden = np.tanh(x @ rng.standard_normal((FEATURES, HIDDEN)))
    y = np.argmax(hidden @ rng.standard_normal((HIDDEN, CLASSES)), axis=1).astype(np.int32)
    return x, y


def build_replicas(devices: list[str], seed: int) -> list[list[tf.Variable]]:
    """One replica of the model's variables per device, all with the same initial values."""
    rng = np.random.default_rng(seed)
    initial = [
        rng.normal(0, FEATURES**-0.5, (FEATURES, HIDDEN)).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        rng.normal(0, HIDDEN**-0.5, (HIDDEN, CLASSES)).astype(np.float32),
        np.zeros(CLASSES, np.float32),
    ]
    replicas = []
    for d, device in enumerate(devices):
        with tf.device(device):
            names = ["w1", "b1", "w2", "b2"]
            replicas.append([tf.Variable(v, name=f"{n}_replica{d}") for n, v in zip(names, initial)])
    return replicas


def loss_fn(variables: list[tf.Variable], x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    w1, b1, w2, b2 = variables
    logits = tf.nn.relu(x @ w1 + b1) @ w2 + b2
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


class Step(NamedTuple):
    loss: float
    replicas_identical: bool


def train(
    devices: list[str], spec: str, steps: int, max_bytes: int, lr: float = 0.5, seed: int = 0
) -> list[Step]:
    """Trains for ``steps`` steps; after each, checks that all replicas are bitwise identical."""
    replicas = build_replicas(devices, seed)
    n = len(devices)
    x, y = make_data(8192, seed)
    rng = np.random.default_rng(seed + 1)

    @tf.function(autograph=False)  # plain Python loops over devices, unrolled when traced
    def step(xs: list[tf.Tensor], ys: list[tf.Tensor]) -> tf.Tensor:
        tower_grads, losses = [], []
        for d, (device, variables) in enumerate(zip(devices, replicas)):
            with tf.device(device):
                with tf.GradientTape() as tape:
                    loss = loss_fn(variables, xs[d], ys[d])
                    scaled = loss / n  # the sum over replicas is then the global mean's gradient
                grads = tape.gradient(scaled, variables)
                tower_grads.append(list(zip(grads, variables)))
                losses.append(loss)
        summed, packing = allreduce.sum_gradients_all_reduce(
            "", tower_grads, 1, spec, 1, list(range(n)), agg_small_grads_max_bytes=max_bytes
        )
        summed = allreduce.unpack_small_tensors(summed, packing)
        for device, tower in zip(devices, summed):
            with tf.device(device):
                for grad, var in tower:
                    var.assign_sub(lr * grad)
        return tf.add_n(losses) / n

    history = []
    for _ in range(steps):
        batch = rng.choice(len(x), PER_DEVICE_BATCH * n, replace=False)
        xs, ys = [], []
        for d, device in enumerate(devices):
            rows = batch[d * PER_DEVICE_BATCH : (d + 1) * PER_DEVICE_BATCH]
            with tf.device(device):
                xs.append(tf.identity(x[rows]))
                ys.append(tf.identity(y[rows]))
        loss = float(step(xs, ys))
        identical = all(
            len({replica[i].numpy().tobytes() for replica in replicas}) == 1 for i in range(len(replicas[0]))
        )
        history.append(Step(loss, identical))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="pscpu:256:xring#2", help="all-reduce spec (default %(default)s)")
    parser.add_argument("--devices", type=int, default=4, help="logical CPUs (default %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="training steps (default %(default)s)")
    parser.add_argument("--max-bytes", type=int, default=1024, help="pack gradients up to this size (bytes)")
    args = parser.parse_args()
    devices = allreduce.logical_devices(args.devices)
    print(f"{len(devices)} replicas, spec {args.spec!r}, packing gradients of at most {args.max_bytes} bytes")
    start = time.perf_counter()
    history = train(devices, args.spec, args.steps, args.max_bytes)
    print("steps      mean loss")
    for first in range(0, len(history), 10):
        window = history[first : first + 10]
        print(f"{first:3d}-{first + len(window) - 1:3d}    {np.mean([s.loss for s in window]):.4f}")
    print(f"replicas bitwise identical after every step: {all(s.replicas_identical for s in history)}")
    print(f"{len(history)} steps in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
