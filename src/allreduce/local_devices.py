"""Logical devices of this process: one CPU (or one GPU) split into several."""

from __future__ import annotations

import logging

from allreduce._tf import tf
from allreduce.validation import check_choice, check_int

__all__ = ["logical_devices"]

logger = logging.getLogger(__name__)

DEFAULT_GPU_MEMORY_MB = 4096


def logical_devices(
    count: int, device_type: str = "CPU", *, gpu_memory_mb: int = DEFAULT_GPU_MEMORY_MB
) -> list[str]:
    """Full names of ``count`` logical devices of ``device_type`` in this process.

    Before TensorFlow's runtime starts, the first CPU (or a single GPU, with
    ``gpu_memory_mb`` each) is split into ``count`` logical devices; a split made
    earlier, or a runtime that has already started, is kept as it is.

    Raises:
        TypeError: ``count`` or ``gpu_memory_mb`` is not an int, ``device_type`` not a str.
        ValueError: ``count`` is below 1 or ``device_type`` is not ``CPU`` or ``GPU``.
        RuntimeError: no such device, or fewer than ``count`` of them and too late to split.
    """
    check_int("count", count, minimum=1)
    check_choice("device_type", device_type, ("CPU", "GPU"))
    check_int("gpu_memory_mb", gpu_memory_mb, minimum=1)
    physical = tf.config.list_physical_devices(device_type)
    if not physical:
        raise RuntimeError(f"no {device_type} visible to TensorFlow")
    configs = None
    if device_type == "CPU":
        configs = [tf.config.LogicalDeviceConfiguration()] * count
    elif len(physical) == 1 and count > 1:
        configs = [tf.config.LogicalDeviceConfiguration(memory_limit=gpu_memory_mb)] * count
    if configs is not None and tf.config.get_logical_device_configuration(physical[0]) is None:
        try:
            tf.config.set_logical_device_configuration(physical[0], configs)
        except RuntimeError:
            logger.info("TensorFlow's runtime has started: using its logical devices")
    logical = tf.config.list_logical_devices(device_type)
    if len(logical) < count:
        raise RuntimeError(
            f"{count} logical {device_type} devices wanted, TensorFlow has {len(logical)} and its "
            "runtime started before they could be split; ask for them first thing in a fresh process"
        )
    return [f"/job:localhost/replica:0/task:0/device:{device_type}:{i}" for i in range(count)]
