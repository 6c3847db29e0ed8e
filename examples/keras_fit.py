"""Keras ``model.fit`` under ``MirroredStrategy`` with gradients summed by a spec.

A small text-and-features classifier (an ``Embedding``, whose gradients are sparse, and
two ``Dense`` layers) trains on 4 logical CPUs with ``allreduce.SpecCrossDeviceOps``,
then once more on one device from the same initial weights and the same batches, to
show that the distributed run follows single-device training.

    python examples/keras_fit.py                         # 4 logical CPUs, pscpu:1k:xring#2
    python examples/keras_fit.py --spec rechd --epochs 3 --pack-max-bytes 0
    python examples/keras_fit.py --compression bf16-all  # every hop's gradients as bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import allreduce
from allreduce.cross_device_ops import SpecCrossDeviceOps
from allreduce.graph.compression import CastWire

VOCAB, LENGTH, FEATURES, CLASSES = 500, 10, 8, 4
GLOBAL_BATCH = 128


def make_dataset(samples: int, seed: int) -> tf.data.Dataset:
    """Token sequences and feature vectors labelled by a random teacher, in fixed batches."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (samples, LENGTH)).astype(np.int32)
    features = rng.standard_normal((samples, FEATURES)).astype(np.float32)
    scores = (
        rng.standard_normal((VOCAB, CLASSES))[tokens].mean(axis=1)
        + features @ rng.standard_normal((FEATURES, CLASSES)) * 0.3
    )
    labels = np.argmax(scores, axis=1).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices(((tokens, features), labels)).batch(
        GLOBAL_BATCH, drop_remainder=True
    )


def build_model() -> tf.keras.Model:
    keras = tf.keras
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    features = keras.Input((FEATURES,), name="features")
    bag = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 16)(tokens))
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Concatenate()([bag, features]))
    model = keras.Model([tokens, features], keras.layers.Dense(CLASSES)(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def fit(
    strategy: tf.distribute.Strategy | None, weights: list[np.ndarray] | None, epochs: int, seed: int = 0
) -> tuple[tf.keras.Model, list[float]]:
    """Builds the model (under ``strategy``), sets ``weights`` if given, fits; returns the
    model and the loss after each epoch."""
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model()
    if weights is not None:
        model.set_weights(weights)
    history = model.fit(make_dataset(4096, seed), epochs=epochs, verbose=0, shuffle=False)
    return model, history.history["loss"]


def wire(name: str) -> str | CastWire:
    """A ``--compression`` name as ``SpecCrossDeviceOps`` takes it: ``bf16-all`` compresses
    every hop, also between CPUs of this process (which ``bf16`` leaves alone)."""
    base, _, everywhere = name.partition("-")
    return CastWire(base, everywhere=True) if everywhere else base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="pscpu:1k:xring#2", help="all-reduce spec (default %(default)s)")
    parser.add_argument("--devices", type=int, default=4, help="logical CPUs (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs (default %(default)s)")
    parser.add_argument("--pack-max-bytes", type=int, default=4096, help="pack gradients up to this size")
    parser.add_argument(
        "--compression",
        default="none",
        choices=["none", "bf16", "fp16", "bf16-all", "fp16-all"],
        help="gradients on the wire (default %(default)s; -all: every hop, also between these CPUs)",
    )
    args = parser.parse_args()
    devices = allreduce.logical_devices(args.devices)

    ops = SpecCrossDeviceOps(
        args.spec, pack_max_bytes=args.pack_max_bytes, check_finite=True, compression=wire(args.compression)
    )
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=ops)
    print(f"allreduce {allreduce.__version__}: {ops!r} on {strategy.num_replicas_in_sync} replicas")
    tf.keras.utils.set_random_seed(1)
    initial = build_model().get_weights()

    start = time.perf_counter()
    model, losses = fit(strategy, initial, args.epochs)
    seconds = time.perf_counter() - start
    single, single_losses = fit(None, initial, args.epochs)

    print(f"epoch   loss ({len(devices)} replicas)   loss (1 device)")
    for epoch, (loss, reference) in enumerate(zip(losses, single_losses), start=1):
        print(f"{epoch:5d}   {loss:18.6f}   {reference:15.6f}")
    replicas_identical = all(
        len({v.numpy().tobytes() for v in w.value.values}) == 1
        for w in model.weights
        if hasattr(w.value, "values")
    )
    difference = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), single.get_weights()))
    drift = max(abs(loss - reference) / reference for loss, reference in zip(losses, single_losses))
    print(f"replicas bitwise identical: {replicas_identical}")
    print(f"largest loss difference from one-device training: {100 * drift:.3f} %")
    print(f"largest weight difference from one-device training: {difference:.2e}")
    print(f"distributed fit: {seconds:.1f} s for {args.epochs} epochs of {4096 // GLOBAL_BATCH} steps")


if __name__ == "__main__":
    main()
