"""Keras ``fit`` under MirroredStrategy + SpecCrossDeviceOps matches training on one device.

Both runs start from the same weights and see the same global batches; the distributed
run splits each batch over 4 logical CPUs and sums the replicas' gradients with the
spec. The weights may differ only by float32 rounding in a different summation order,
bounded by :func:`trajectory_bound` below.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import allreduce.api
from allreduce.cross_device_ops import SpecCrossDeviceOps
from tests.strategies import cpu

DEVICES = [cpu(i) for i in range(4)]
BATCH = 32  # global; 8 per replica. Powers of two: every 1/n scaling of the loss is exact.
STEPS = 3
CLASSES = 3
U = 2.0**-24  # float32 unit roundoff


def gamma(k: int) -> float:
    """Higham's gamma_k = k u / (1 - k u): the relative error of k roundings."""
    return k * U / (1 - k * U)


def trajectory_bound(w0_max: float, lr: float, logit_terms: int) -> float:
    """Largest possible max|w_distributed - w_single| after STEPS steps of plain SGD.

    The model is a linear softmax classifier trained with cross-entropy on the mean over
    the global batch: each logit sums ``logit_terms`` products (x.W + b with |x| <= 1, or
    one embedding entry), so every per-sample gradient term is at most 1 in magnitude
    (|x| <= 1, |softmax - onehot| <= 1) and every weight moves at most ``lr`` per step.
    Per step t, with w_t = w0_max + t lr bounding the weights:

    1. Gradient summation: both runs sum the same BATCH terms (scaled by exact powers of
       two) in different orders; each is within gamma_BATCH * sum|terms| / BATCH <=
       gamma_BATCH of the exact mean (Higham 4.2, one more rounding for the product), so
       they differ by at most 2 gamma_BATCH.
    2. Forward pass: a logit may be summed in another order (different kernels for 8 and
       32 rows): within gamma_k * k * w_t of exact, so the runs' logits differ by
       2 gamma_k k w_t; softmax is 1/2-Lipschitz in the max norm and its own evaluation
       (exp, sum of CLASSES, divide, subtract) may round differently (2 gamma_{C+3}).
    3. Propagation: logits are k-Lipschitz in the weights (max norm) and softmax
       1/2-Lipschitz, so the gradient is k/2-Lipschitz: an earlier difference d grows to
       (1 + lr k / 2) d.
    4. Update: w - lr g is the same op on different inputs; rounding is monotone, so it
       adds at most the rounding of each run, gamma_{BATCH+1} (w_t + lr) each (a sparse
       update may add up to BATCH rows into one weight one at a time).
    """
    k = logit_terms
    delta = 0.0
    for t in range(STEPS):
        w_t = w0_max + t * lr
        grad_diff = 2 * gamma(BATCH) + gamma(k) * k * w_t + 2 * gamma(CLASSES + 3)
        delta = (1 + lr * k / 2) * delta + lr * (1 + U) * grad_diff + 2 * gamma(BATCH + 1) * (w_t + lr)
    return delta


def dense_model() -> keras.Model:
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(CLASSES)])


def embedding_model() -> keras.Model:
    """Logits are one embedding row: the gradient is tf.IndexedSlices."""
    return keras.Sequential(
        [keras.Input((1,), dtype="int32"), keras.layers.Embedding(50, CLASSES), keras.layers.Flatten()]
    )


def train(build, dataset: tf.data.Dataset, lr: float, init: list[np.ndarray] | None, strategy=None):
    """Fits one epoch (STEPS batches) with SGD; returns (model, initial weights)."""
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = build()
        model.compile(
            optimizer=keras.optimizers.SGD(lr),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    if init is not None:
        model.set_weights(init)
    start = [w.copy() for w in model.get_weights()]
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return model, start


def assert_replicas_identical(model: keras.Model) -> None:
    for weight in model.weights:
        replicas = [v.numpy().tobytes() for v in weight.value.values]
        assert len(replicas) == len(DEVICES) and len(set(replicas)) == 1, weight.path


@pytest.fixture
def spy(monkeypatch) -> list[tuple[str, int]]:
    """Records (spec, tensors per tower) of every allreduce.api.batch_all_reduce call."""
    calls: list[tuple[str, int]] = []
    real = allreduce.api.batch_all_reduce

    def recording(towers, spec, **kwargs):
        calls.append((spec, len(towers[0])))
        return real(towers, spec, **kwargs)

    monkeypatch.setattr(allreduce.api, "batch_all_reduce", recording)
    return calls


@pytest.fixture(scope="module")
def dense_data() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (BATCH * STEPS, 8)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH * STEPS)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


@pytest.mark.parametrize(
    ("spec", "pack_max_bytes"),
    [("xring", 0), ("pscpu", 0), ("rechd", 0), ("pscpu:1k:xring#2", 0), ("xring", 4096), ("pscpu#2", 64)],
)
def test_fit_matches_single_device_training(dense_data, spy, spec: str, pack_max_bytes: int) -> None:
    lr = 0.1
    single, init = train(dense_model, dense_data, lr, None)
    ops = SpecCrossDeviceOps(spec, pack_max_bytes=pack_max_bytes, check_finite=True)
    strategy = tf.distribute.MirroredStrategy(DEVICES, cross_device_ops=ops)
    distributed, _ = train(dense_model, dense_data, lr, init, strategy)

    assert spy == [(spec, 2)]  # kernel and bias, reduced by the spec (traced once)
    assert_replicas_identical(distributed)
    bound = trajectory_bound(max(np.abs(w).max() for w in init), lr, logit_terms=9)
    moved = max(np.abs(a - b).max() for a, b in zip(single.get_weights(), init))
    assert bound < moved / 100  # so a wrong gradient (e.g. a mean instead of a sum) fails
    for want, got in zip(single.get_weights(), distributed.get_weights()):
        assert np.abs(got - want).max() <= bound


@pytest.mark.parametrize("densify_max_elements", [0, 1000])
def test_fit_with_sparse_gradients_matches_single_device(spy, densify_max_elements: int) -> None:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 50, (BATCH * STEPS, 1)).astype(np.int32)
    labels = rng.integers(0, CLASSES, BATCH * STEPS)
    data = tf.data.Dataset.from_tensor_slices((tokens, labels)).batch(BATCH)
    lr = 0.5
    single, init = train(embedding_model, data, lr, None)
    ops = SpecCrossDeviceOps("xring", densify_max_elements=densify_max_elements)
    strategy = tf.distribute.MirroredStrategy(DEVICES, cross_device_ops=ops)
    distributed, _ = train(embedding_model, data, lr, init, strategy)

    # Gathered as IndexedSlices (no dense all-reduce), or densified and all-reduced.
    assert spy == ([] if densify_max_elements == 0 else [("xring", 1)])
    assert_replicas_identical(distributed)
    bound = trajectory_bound(np.abs(init[0]).max(), lr, logit_terms=1)
    assert np.abs(distributed.get_weights()[0] - single.get_weights()[0]).max() <= bound
