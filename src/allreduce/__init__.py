"""allreduce: classic all-reduce algorithms for TensorFlow 2 behind one spec language.

>>> import allreduce
>>> results = allreduce.all_reduce(tensors, "xring#2")        # doctest: +SKIP

The pure planning layer (:mod:`allreduce.spec`, :mod:`allreduce.devices`,
:mod:`allreduce.ranges`, :mod:`allreduce.schedules`, :mod:`allreduce.registry`) needs
neither a graph nor TensorFlow: ``import allreduce.spec`` works where TensorFlow is not
installed. The public names below are loaded on first use; a name that needs TensorFlow
raises an ``ImportError`` with install advice when TensorFlow is missing.
:mod:`allreduce.algorithms` holds one module per algorithm; :mod:`allreduce.spmd` is the
mode in which every worker builds only its own part (``allreduce.spmd.all_reduce``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_EXPORTS = {
    "all_reduce": "allreduce.api",
    "batch_all_reduce": "allreduce.api",
    "WorkerError": "allreduce.cluster",
    "connect": "allreduce.cluster",
    "local_cluster": "allreduce.cluster",
    "aggregate_gradients_using_copy_with_device_selection": "allreduce.compat",
    "aggregate_single_gradient": "allreduce.compat",
    "sum_grad_and_var_all_reduce": "allreduce.compat",
    "sum_gradients_all_reduce": "allreduce.compat",
    "SpecCrossDeviceOps": "allreduce.cross_device_ops",
    "build_all_reduce_device_prefixes": "allreduce.devices",
    "explain": "allreduce.explanation",
    "group_device_names": "allreduce.devices",
    "error_bound": "allreduce.accuracy",
    "logical_devices": "allreduce.local_devices",
    "GradPackTuple": "allreduce.packing",
    "pack_range": "allreduce.packing",
    "pack_small_tensors": "allreduce.packing",
    "split_grads_by_size": "allreduce.packing",
    "unpack_grad_tuple": "allreduce.packing",
    "unpack_small_tensors": "allreduce.packing",
    "extract_ranges": "allreduce.ranges",
    "algorithm_names": "allreduce.registry",
    "get_algorithm": "allreduce.registry",
    "AllReduceSpecTuple": "allreduce.spec",
    "format_all_reduce_spec": "allreduce.spec",
    "parse_all_reduce_spec": "allreduce.spec",
    "parse_general_int": "allreduce.spec",
    "tune": "allreduce.tuning",
}

#: Subpackages loaded on first use (none of them imports TensorFlow when loaded).
_SUBPACKAGES = ("spmd",)

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES])


def __getattr__(name: str) -> Any:
    """Loads a public name from its module on first use (PEP 562)."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"allreduce.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'allreduce' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))
