"""``examples/spmd_keras_fit.py``: Keras ``fit`` on 2 workers, gradients averaged by an SPMD
spec in ``train_step``, keeps the models bitwise identical on both workers and trains as
one model on the combined batches does (float32, so to a tolerance: the sums round in
another order)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

from allreduce import spmd

pytestmark = pytest.mark.multiworker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _reference(epochs: int) -> dict:
    """One process, no exchange: each step on the two workers' batches together."""
    import spmd_keras_fit as example
    import tensorflow as tf

    model = example.make_model("xring")
    keras = tf.keras
    plain = keras.Model(model.inputs, model.outputs)
    plain.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x, y = example.data(2)
    b, per = example.BATCH_PER_WORKER, example.SAMPLES_PER_WORKER
    order = [
        i
        for step in range(per // b)
        for w in range(2)
        for i in range(w * per + step * b, w * per + (step + 1) * b)
    ]
    plain.fit(x[order], y[order], batch_size=2 * b, epochs=epochs, shuffle=False, verbose=0)
    return {"weights": [v.numpy() for v in plain.trainable_variables]}


def test_keras_fit_with_an_spmd_spec_matches_one_model_on_the_combined_batches():
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import spmd_keras_fit as example

    results = spmd.launch(functools.partial(example.fit_worker, "rechd", 2), 2, timeout_s=240)
    for a, b in zip(results[0]["weights"], results[1]["weights"]):
        assert a.tobytes() == b.tobytes()
    assert results[0]["after"] < results[0]["before"] / 4
    reference = _reference(2)
    for got, want in zip(results[0]["weights"], reference["weights"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
