"""The one place that imports TensorFlow, with an error that says how to get it."""

from __future__ import annotations

try:
    import tensorflow as tf
except ImportError as err:  # pragma: no cover - exercised only without TensorFlow
    raise ImportError(
        "allreduce needs TensorFlow 2, which is not installed. Install it with the "
        "extra for your hardware: pip install 'allreduce[cpu]' (tensorflow-cpu) or "
        "pip install 'allreduce[gpu]' (tensorflow[and-cuda])."
    ) from err

#: The dtypes the algorithms reduce.
SUPPORTED_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)

__all__ = ["SUPPORTED_DTYPES", "tf"]
