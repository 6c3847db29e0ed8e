"""The independent oracle: exact float64 sums in numpy, and the tolerance they allow."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

#: Unit roundoff (half an ulp of 1.0) of each floating dtype.
UNIT_ROUNDOFF = {
    tf.float16: 2.0**-11,
    tf.bfloat16: 2.0**-8,
    tf.float32: 2.0**-24,
    tf.float64: 2.0**-53,
}
#: Smallest positive subnormal of each floating dtype.
TINY = {
    tf.float16: 2.0**-24,
    tf.bfloat16: 2.0**-133,
    tf.float32: 2.0**-149,
    tf.float64: 2.0**-1074,
}


def to_float64(t: tf.Tensor) -> np.ndarray:
    """The values of ``t`` as float64 (exact for every supported dtype)."""
    if t.dtype == tf.bfloat16:
        t = tf.cast(t, tf.float32)
    return np.asarray(t.numpy(), dtype=np.float64)


def exact_sum(values: Sequence[np.ndarray]) -> np.ndarray:
    """The correctly rounded float64 sum of the arrays, elementwise (``math.fsum``)."""
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in values]).reshape(len(values), -1)
    flat = np.array([math.fsum(stacked[:, j]) for j in range(stacked.shape[1])], dtype=np.float64)
    return flat.reshape(np.shape(values[0]))


def tolerance(values: Sequence[np.ndarray], dtype: tf.DType, mean: bool) -> np.ndarray:
    """Error bound of summing ``values`` in ``dtype`` in any order (and dividing, for a mean).

    Recursive summation of n terms in any order is within gamma_{n-1} * sum|x_i| of
    the exact sum (Higham, Accuracy and Stability of Numerical Algorithms, 4.2), with
    gamma_k = k u / (1 - k u); each addition may also lose up to one subnormal step.
    A mean adds one rounding of the quotient.
    """
    n = len(values)
    if dtype.is_integer:
        return np.zeros(np.shape(values[0]))
    u = UNIT_ROUNDOFF[dtype]
    k = n - 1
    gamma = k * u / (1 - k * u)
    magnitude = np.sum(np.abs(np.stack([np.asarray(v, np.float64) for v in values])), axis=0)
    bound = gamma * magnitude + k * TINY[dtype]
    if mean:
        bound = bound * (1 + u) / n + u * np.abs(exact_sum(values)) / n + TINY[dtype]
    return bound
