"""The one place that imports TensorFlow, with an error that says how to get it."""

from __future__ import annotations

from allreduce.core.tables import DTYPE_SIZES

try:
    import tensorflow as tf
except ImportError as err:  # pragma: no cover - exercised only without TensorFlow
    raise ImportError(
        "allreduce needs TensorFlow 2, which is not installed. Install it with the "
        "extra for your hardware: pip install 'allreduce[cpu]' (tensorflow-cpu) or "
        "pip install 'allreduce[gpu]' (tensorflow[and-cuda])."
    ) from err

#: The dtypes the algorithms reduce.
SUPPORTED_DTYPES = tuple(tf.as_dtype(name) for name in DTYPE_SIZES)

__all__ = ["SUPPORTED_DTYPES", "tf"]
