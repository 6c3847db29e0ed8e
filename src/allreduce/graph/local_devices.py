"""Logical devices of this process: one CPU (or one GPU) split into several."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from allreduce.core._tf import tf
from allreduce.core.runtime_hooks import on_context_change
from allreduce.core.validation import check_choice, check_int
from allreduce.planning.devices import parse_device_name

__all__ = ["check_devices_exist", "check_tensor_devices", "logical_devices"]

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


_known_lock = threading.Lock()
_known: list[Any] | None = None


@on_context_change
def _forget_known_devices() -> None:
    global _known
    with _known_lock:
        _known = None


def _runtime_devices(refresh: bool) -> tuple[list[Any], str]:
    """The parsed logical devices of the runtime (remote ones once connected) and the
    job of this process."""
    global _known

    with _known_lock:
        if _known is None or refresh:
            _known = [parse_device_name(d.name) for d in tf.config.list_logical_devices()]
        known = _known
    try:
        from tensorflow.python.eager import context

        local = parse_device_name(context.context().host_address_space()).job or "localhost"
    except Exception:  # pragma: no cover - a TensorFlow without the private helper
        local = "localhost"
    return known, local


def _matches(wanted: Any, device: Any, local_job: str) -> bool:
    # The runtime lists this process's devices without a job until it connects.
    job = wanted.job if wanted.job is not None else local_job
    return (
        (device.job or local_job) == job
        and wanted.replica in (None, device.replica or 0)
        and wanted.task in (None, device.task or 0)
        and wanted.device_type in (None, device.device_type)
        and wanted.index in (None, device.index)
    )


def check_devices_exist(devices: Sequence[str]) -> None:
    """Checks every device name against the runtime's logical devices.

    Only in eager mode and inside ``tf.function``: a TensorFlow 1 graph built for a
    ``Session`` may run elsewhere, or with soft placement, and is left alone.

    Raises:
        ValueError: a name matches no logical device of this process or of a
            connected cluster.
    """

    if not (tf.executing_eagerly() or tf.inside_function()):
        return
    wanted = {name: parse_device_name(name) for name in devices}
    for refresh in (False, True):
        known, local = _runtime_devices(refresh)
        missing = [n for n, w in wanted.items() if not any(_matches(w, k, local) for k in known)]
        if not missing:
            return
    listed = ", ".join(sorted(str(k) for k in known))
    raise ValueError(
        f"device {missing[0]!r} does not exist: TensorFlow's logical devices are {listed} "
        "(split a CPU with allreduce.logical_devices, or connect to a cluster first)"
    )


def check_tensor_devices(towers: Sequence[Sequence[Any]], devices: Sequence[str]) -> None:
    """Checks, in eager mode, that every tensor of tower ``d`` sits on ``devices[d]``.

    Raises:
        ValueError: the first tensor on another device than its tower's, naming both.
    """
    if not tf.executing_eagerly():
        return
    local = None
    for d, (tower, name) in enumerate(zip(towers, devices)):
        wanted = parse_device_name(name)
        for i, tensor in enumerate(tower):
            where = getattr(tensor, "device", "")
            if not where:
                continue
            if local is None:
                local = _runtime_devices(False)[1]
            if not _matches(wanted, parse_device_name(where), local):
                raise ValueError(
                    f"devices[{d}] is {name!r}, but tensor {i} of tower {d} is on {where!r}: "
                    "devices must name where each input is (results stay on their input's device)"
                )
