"""The benchmark's inputs with known sums, and the checks of every output against them:
exact (or within a compression's limits) on every device, and bitwise identical across
devices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from allreduce.measure.cases import (
    Case,
    expected_sum,
    input_pattern,
    rounding_applies,
    rounding_pattern,
    rounding_sum,
)
from allreduce.measure.contenders import Inputs

__all__ = ["Outputs", "count_wrong", "drain", "largest_error", "make_inputs"]

#: One list of output tensors (or arrays) per device.
Outputs = Sequence[Sequence[Any]]

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def make_inputs(
    case: Case, devices: Sequence[str], *, rounding: bool = False
) -> tuple[Inputs, list[np.ndarray]]:
    """The inputs of ``case`` on ``devices`` and the exact expected sum of each tensor;
    ``rounding``: inputs that a compression must round, where the dtype has the bits
    (:func:`~allreduce.measure.cases.rounding_applies`)."""
    from allreduce.core._tf import tf

    np_dtype = tf.as_dtype(case.dtype).as_numpy_dtype
    n = len(devices)
    rounding = rounding and rounding_applies(case.dtype)
    pattern, total = (rounding_pattern, rounding_sum) if rounding else (input_pattern, expected_sum)
    host = [
        [
            pattern(int(np.prod(shape)), d, t).astype(np_dtype).reshape(shape)
            for t, shape in enumerate(case.shapes)
        ]
        for d in range(n)
    ]
    tensors = []
    for device, tower in zip(devices, host):
        with tf.device(device):
            tensors.append([tf.identity(tf.constant(h)) for h in tower])
    expected = [total(int(np.prod(shape)), n, t).astype(np_dtype) for t, shape in enumerate(case.shapes)]
    return Inputs(case=case, devices=tuple(devices), host=host, tensors=tensors), expected


def drain(outputs: Outputs) -> None:
    """Waits for every output the same way for every contender (``np.asarray``)."""
    for tower in outputs:
        for value in tower:
            np.asarray(value)


def count_wrong(
    outputs: Outputs,
    expected: Sequence[np.ndarray],
    case: Case,
    limits: Sequence[np.ndarray] | None = None,
) -> tuple[int, int]:
    """Compares every output on every device with the exact sums.

    Returns:
        ``(wrong, replica_mismatch)``: elements, over all devices and tensors, that differ
        from the expected value (by more than ``limits[t]`` where given; a missing or
        misshapen tensor counts in full), and elements whose bits differ from the first
        device's result.
    """
    wrong = mismatch = 0
    first: list[np.ndarray | None] = [None] * len(expected)
    for tower in outputs:
        for t, want in enumerate(expected):
            if t >= len(tower):
                wrong += want.size
                continue
            got = np.asarray(tower[t])
            if got.shape != tuple(case.shapes[t]) or got.dtype != want.dtype:
                wrong += want.size
                continue
            flat = got.reshape(-1)
            if limits is None:
                wrong += int(np.count_nonzero(flat != want))
            else:
                error = np.abs(flat.astype(np.float64) - want.reshape(-1).astype(np.float64))
                wrong += int(np.count_nonzero(~(error <= limits[t].reshape(-1))))
            bits = flat.view(_UINT[flat.dtype.itemsize])
            if first[t] is None:
                first[t] = bits
            else:
                mismatch += int(np.count_nonzero(bits != first[t]))
    if len(outputs) == 0:
        wrong += sum(e.size for e in expected)
    return wrong, mismatch


def largest_error(outputs: Outputs, expected: Sequence[np.ndarray]) -> float:
    """The largest ``|output - expected|`` over every element of every device (NaN if
    one is NaN; outputs of the wrong shape are left to :func:`count_wrong`)."""
    largest = 0.0
    for tower in outputs:
        for got, want in zip(tower, expected):
            got = np.asarray(got)
            if got.size != want.size or not want.size:
                continue
            error = np.abs(got.reshape(-1).astype(np.float64) - want.reshape(-1).astype(np.float64))
            largest = max(largest, float(np.max(error)), key=lambda e: (np.isnan(e), e))
    return largest
