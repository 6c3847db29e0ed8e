"""``examples/multiworker_training.py``: a custom loop across ``local_cluster(2, 2)`` trains
exactly as one device would on the concatenated batch.

Why the bound is zero. The test trains in float64 on dyadic rationals: inputs and
targets in {-1, 0, 1}, weights in {±1/2, ±1}, biases in {±1/4}, learning rate 1/16, a
global batch of 8 split into 4 replicas of 2. Every operation of a step (products,
sums over features, samples and replicas, the scalings by 2, 1/2, 1/4 and 1/16,
``relu`` and its mask) maps dyadic rationals to dyadic rationals. A sum of terms that
are multiples of 2^-k is, after any number of additions in any order, a multiple of
2^-k no larger than S = sum |term|; float64 holds every such number exactly when
S * 2^k < 2^53. The oracle below computes the training exactly with ``Fraction`` and
records, for every sum and product the computation needs, the bits S * 2^k takes; the
test checks that they never exceed 53. Then neither run rounds at all, whatever order
TensorFlow, the hierarchical ``pscpu/pscpu`` all-reduce or the replica split adds in:
both must equal the exact result, bit for bit. Bits roughly triple per step (a step
multiplies weights by weights), so two steps fit (38 bits) and a third would need about 120; the
float32 run of the command line covers longer training.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest

from .conftest import run_client

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(300)]

FEATURES, HIDDEN, BATCH, STEPS = 3, 4, 8, 2
LR = Fraction(1, 16)
FLOAT64_BITS = 53


def _data(seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    batches = [
        (rng.integers(-1, 2, (BATCH, FEATURES)).astype(float), rng.integers(-1, 2, (BATCH, 1)).astype(float))
        for _ in range(STEPS)
    ]
    initial = [
        rng.choice([-1.0, -0.5, 0.5, 1.0], (FEATURES, HIDDEN)),
        rng.choice([-0.25, 0.25], HIDDEN),
        rng.choice([-1.0, -0.5, 0.5, 1.0], (HIDDEN, 1)),
        rng.choice([-0.25, 0.25], 1),
    ]
    return batches, initial


class Exact:
    """Exact arithmetic that records the most bits a float64 step of it would need."""

    def __init__(self) -> None:
        self.bits = 0

    def sum(self, terms: list[Fraction]) -> Fraction:
        """The exact sum; records the bits of S * 2^k for the terms' finest grid 2^-k."""
        k = 0
        for t in terms:
            d = t.denominator
            assert d & (d - 1) == 0, f"{t} is not dyadic"
            k = max(k, d.bit_length() - 1)
        scaled = sum(abs(t) for t in terms) * 2**k
        assert scaled.denominator == 1
        self.bits = max(self.bits, int(scaled).bit_length())
        return sum(terms, Fraction(0))

    def mul(self, a: Fraction, b: Fraction) -> Fraction:
        return self.sum([a * b])

    def step(self, w: list, x: list, y: list) -> list:
        """One SGD step on the mean squared error of ``relu(x w1 + b1) w2 + b2``."""
        (w1, b1, w2, b2), n = w, len(x)
        pre = [
            [self.sum([*(x[i][f] * w1[f][h] for f in range(FEATURES)), b1[h]]) for h in range(HIDDEN)]
            for i in range(n)
        ]
        hid = [[max(p, Fraction(0)) for p in row] for row in pre]
        out = [self.sum([*(hid[i][h] * w2[h][0] for h in range(HIDDEN)), b2[0]]) for i in range(n)]
        g = [self.mul(self.sum([out[i], -y[i][0]]), Fraction(2, n)) for i in range(n)]  # d loss / d out[i]
        live = [[pre[i][h] > 0 for h in range(HIDDEN)] for i in range(n)]  # relu's gradient mask
        dpre = [
            [self.mul(g[i], w2[h][0]) if live[i][h] else Fraction(0) for h in range(HIDDEN)] for i in range(n)
        ]
        grads = [
            [
                [self.sum([x[i][f] * dpre[i][h] for i in range(n)]) for h in range(HIDDEN)]
                for f in range(FEATURES)
            ],
            [self.sum([dpre[i][h] for i in range(n)]) for h in range(HIDDEN)],
            [[self.sum([hid[i][h] * g[i] for i in range(n)])] for h in range(HIDDEN)],
            [self.sum(g)],
        ]
        return self.update(w, grads)

    def update(self, w, grads):
        """``w - LR * grads``, elementwise over nested lists."""
        if isinstance(w, list):
            return [self.update(a, b) for a, b in zip(w, grads)]
        return self.sum([w, -self.mul(LR, grads)])


def _fractions(value) -> list:
    array = np.asarray(value, dtype=np.float64)
    return [_fractions(v) for v in array] if array.ndim else Fraction(float(array))


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    batches, initial = _data(seed=5)
    args = {
        "batches": [(x.tolist(), y.tolist()) for x, y in batches],
        "initial": [w.tolist() for w in initial],
        "spec": "pscpu/pscpu",
        "lr": float(LR),
        "cli_steps": 20,
    }
    manifest, arrays = run_client("training", args, tmp_path_factory.mktemp("training"), 240)
    exact = Exact()
    weights = [_fractions(w) for w in initial]
    for x, y in batches:
        weights = exact.step(weights, _fractions(x), _fractions(y))
    return manifest, arrays, weights, exact.bits


def test_no_step_needs_more_bits_than_float64_has(training):
    bits = training[3]
    assert 0 < bits <= FLOAT64_BITS, f"the exact training needs {bits} bits: the zero bound does not hold"


@pytest.mark.parametrize("run", ["weights", "reference"])
def test_multiworker_and_single_device_training_equal_exact_sgd(training, run):
    manifest, arrays, exact, _ = training
    got = [_fractions(arrays[key]) for key in manifest[run]]
    names = ["w1", "b1", "w2", "b2"]
    for name, value, expected in zip(names, got, exact):
        assert value == expected, f"{run} {name}: {value} != {expected}"


def test_replicas_stay_bitwise_identical(training):
    manifest = training[0]
    assert manifest["replicas_identical"] == [True] * STEPS
    assert len(manifest["devices"]) == 4 and {d.split("/device")[0][-6:] for d in manifest["devices"]} == {
        "task:0",
        "task:1",
    }


def test_example_command_line_trains_across_workers(training):
    output = training[0]["cli_output"]
    assert "4 replicas on 2 workers, spec 'pscpu/pscpu'" in output
    assert "replicas bitwise identical after every step: True" in output
    losses = [float(m) for m in re.findall(r"^\s*\d+-\s*\d+\s+(\S+)$", output, re.MULTILINE)]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert losses[1] < losses[0], output
