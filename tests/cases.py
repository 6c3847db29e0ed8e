"""One all-reduce case, how to run it, and how to check it against the oracle.

Shared by the CPU property tests, the GPU tests and the GPU-named graph tests, so that
every suite checks the same things: every output within the oracle's bound of the exact
sum (integers exactly), of the input's dtype and shape, on its input's device, bitwise
identical to the other outputs, and the inputs unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

import allreduce
from tests.oracle import exact_sum, to_float64, tolerance
from tests.strategies import make_tensor, random_values


@dataclass(frozen=True)
class Case:
    """One all-reduce: ``spec`` over one tensor of ``shape`` and ``dtype`` per device."""

    spec: str
    devices: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: tf.DType
    reduction: str = "sum"
    graph: bool = False
    groups: tuple[tuple[int, ...], ...] | None = None
    seed: int = 0

    @property
    def n(self) -> int:
        return len(self.devices)

    @property
    def mean(self) -> bool:
        return self.reduction == "mean"

    def arrays(self) -> list[np.ndarray]:
        """The inputs as numpy arrays (bfloat16 inputs as float32 values)."""
        rng = np.random.default_rng(self.seed)
        return [random_values(rng, self.shape, self.dtype) for _ in range(self.n)]


@dataclass(frozen=True)
class Outcome:
    """What a case produced: its inputs in float64, its outputs, and where each output
    was computed."""

    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    dtypes: list[tf.DType]
    placed: list[str]


def placement(t: tf.Tensor) -> str:
    """The device of the op that produced a function output (tf.function wraps outputs
    in device-less Identity ops)."""
    while not t.device and t.op.type == "Identity":
        t = t.op.inputs[0]
    return t.device


def _numpy(t: tf.Tensor) -> np.ndarray:
    return t.numpy()


def run_case(case: Case) -> Outcome:
    """Runs ``case`` eagerly or inside ``tf.function``, checking that the inputs are unchanged."""
    tensors = [make_tensor(a, case.dtype, d) for a, d in zip(case.arrays(), case.devices)]
    before = [t.numpy().tobytes() for t in tensors]
    kwargs = dict(reduction=case.reduction, worker_groups=case.groups)
    if case.graph:
        devices = list(case.devices)
        function = tf.function(
            lambda *xs: allreduce.all_reduce(list(xs), case.spec, devices=devices, **kwargs),
            autograph=False,
        )
        outputs = function(*tensors)
        graph = function.get_concrete_function(*tensors).graph
        placed = [placement(t) for t in graph.structured_outputs]
    else:
        outputs = allreduce.all_reduce(tensors, case.spec, **kwargs)
        placed = [t.device for t in outputs]
    assert [t.numpy().tobytes() for t in tensors] == before, "an input was modified"
    return Outcome(
        inputs=[to_float64(t) for t in tensors],
        outputs=[_numpy(t) for t in outputs],
        dtypes=[t.dtype for t in outputs],
        placed=placed,
    )


def as_float64(value: np.ndarray) -> np.ndarray:
    """An output's values in float64 (exact for every supported dtype, bfloat16 included)."""
    return np.asarray(value).astype(np.float64)


def check_outcome(case: Case, outcome: Outcome, bound: np.ndarray | None = None) -> None:
    """Every output within ``bound`` (default: the oracle's) of the exact result, of the
    input's dtype and shape, on its input's device, and all outputs bitwise identical."""
    assert len(outcome.outputs) == case.n
    expected = exact_sum(outcome.inputs) / (case.n if case.mean else 1)
    if bound is None:
        bound = tolerance(outcome.inputs, case.dtype, case.mean)
    for i, (out, dtype) in enumerate(zip(outcome.outputs, outcome.dtypes)):
        assert dtype == case.dtype and tuple(np.shape(out)) == tuple(case.shape)
        want = tf.DeviceSpec.from_string(case.devices[i])
        assert tf.DeviceSpec.from_string(outcome.placed[i]) == want, outcome.placed[i]
        error = np.abs(as_float64(out) - expected)
        assert np.all(error <= bound), f"device {i}: error {error.max()} > bound {np.max(bound)}"
    reference = np.asarray(outcome.outputs[0]).tobytes()
    assert all(np.asarray(out).tobytes() == reference for out in outcome.outputs[1:])


def partition(order: Sequence[int], cuts: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """``order`` cut at the (sorted) positions ``cuts`` into non-empty sorted groups."""
    bounds = [0, *sorted(set(cuts)), len(order)]
    return tuple(tuple(sorted(order[a:b])) for a, b in itertools.pairwise(bounds) if b > a)
