"""Keras ``fit`` across workers with a spec, in SPMD mode, through public APIs only.

No distribution strategy: every worker runs ``model.fit`` on its own shard of the data,
and the model's ``train_step`` (Keras' documented way to customise what ``fit`` does)
averages the gradients over every worker with ``allreduce.spmd.batch_all_reduce``
before the optimizer applies them. Every worker starts from the same seed and applies
the same averaged gradients, so the models stay bitwise identical.

    python examples/spmd_keras_fit.py                     # 2 workers, xring
    python examples/spmd_keras_fit.py --workers 4 --spec rechd
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

BATCH_PER_WORKER, SAMPLES_PER_WORKER = 32, 256


def make_model(spec: str):
    """A small regression model whose ``train_step`` all-reduces its gradients with ``spec``."""
    import tensorflow as tf

    from allreduce import spmd

    keras = tf.keras

    class SpmdModel(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.loss_tracker]

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            averaged = spmd.batch_all_reduce([grads], spec, reduction="mean", devices=["/device:CPU:0"])[0]
            self.optimizer.apply(averaged, self.trainable_variables)
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}

    keras.utils.set_random_seed(0)  # the same initial weights on every worker
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = SpmdModel(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def data(num_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Every worker's samples, worker ``r``'s shard at rows ``r * SAMPLES_PER_WORKER`` on."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num_workers * SAMPLES_PER_WORKER, 8)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def _loss(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((model.predict(x, verbose=0) - y) ** 2))


def fit_worker(spec: str = "xring", epochs: int = 3) -> dict:
    """One worker's part: fit on its own shard. Returns the loss on all the data before
    and after, the per-epoch losses and the final weights."""
    from allreduce import spmd

    worker = spmd.start()
    model = make_model(spec)
    x, y = data(worker.num_workers)
    mine = slice(worker.rank * SAMPLES_PER_WORKER, (worker.rank + 1) * SAMPLES_PER_WORKER)
    before = _loss(model, x, y)
    history = model.fit(
        x[mine], y[mine], batch_size=BATCH_PER_WORKER, epochs=epochs, shuffle=False, verbose=0
    )
    after = _loss(model, x, y)
    weights = [v.numpy() for v in model.trainable_variables]
    return {"before": before, "after": after, "losses": history.history["loss"], "weights": weights}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default %(default)s)")
    parser.add_argument("--spec", default="xring", help="all-reduce spec (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (default %(default)s)")
    args = parser.parse_args(argv)
    from allreduce import spmd

    results = spmd.launch(functools.partial(fit_worker, args.spec, args.epochs), args.workers)
    first = results[0]
    same = all(a.tobytes() == b.tobytes() for r in results for a, b in zip(r["weights"], first["weights"]))
    print(f"loss on all data: {first['before']:.3f} before, {first['after']:.3f} after {args.epochs} epochs")
    print(f"models bitwise identical on every worker: {same}")


if __name__ == "__main__":
    main()
