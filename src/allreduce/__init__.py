"""allreduce: classic all-reduce algorithms for TensorFlow 2 behind one spec language.

>>> import allreduce
>>> results = allreduce.all_reduce(tensors, "xring#2")        # doctest: +SKIP

The package is arranged by layer, each a folder whose docstring says what it may use;
imports run one way, top to bottom (``lint-imports`` checks it):

- :mod:`allreduce.bench`: the ``allreduce-bench`` command line, its report and plot;
- :mod:`allreduce.tuning`: :func:`tune`, which measures;
- :mod:`allreduce.measure`: the measuring engine that tuning and the benchmark share;
- the entry points: :mod:`allreduce.api`, :mod:`allreduce.cross_device_ops`,
  :mod:`allreduce.compat`;
- :mod:`allreduce.cluster`: the cluster backends;
- :mod:`allreduce.graph`: TensorFlow ops; :mod:`allreduce.graph.algorithms` holds one
  builder per algorithm;
- :mod:`allreduce.selection`: ``"auto"`` resolved, and :func:`explain` (no TensorFlow);
- :mod:`allreduce.planning`: the spec language, devices, schedules, the registry and
  the cost formulas (no TensorFlow: it imports where TensorFlow is not installed);
- :mod:`allreduce.core`: argument checks and the tables every layer reads.

:mod:`allreduce.spmd` is the mode in which every worker builds only its own part
(``allreduce.spmd.all_reduce``), beside the entry points.

The public names below are loaded on first use; a name that needs TensorFlow raises an
``ImportError`` with install advice when TensorFlow is missing.
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
    "build_all_reduce_device_prefixes": "allreduce.planning.devices",
    "explain": "allreduce.selection.explain",
    "group_device_names": "allreduce.planning.devices",
    "error_bound": "allreduce.planning.accuracy",
    "logical_devices": "allreduce.graph.local_devices",
    "GradPackTuple": "allreduce.graph.packing",
    "pack_range": "allreduce.graph.packing",
    "pack_small_tensors": "allreduce.graph.packing",
    "split_grads_by_size": "allreduce.graph.packing",
    "unpack_grad_tuple": "allreduce.graph.packing",
    "unpack_small_tensors": "allreduce.graph.packing",
    "extract_ranges": "allreduce.planning.ranges",
    "algorithm_names": "allreduce.planning.registry",
    "get_algorithm": "allreduce.planning.registry",
    "AllReduceSpecTuple": "allreduce.planning.spec",
    "format_all_reduce_spec": "allreduce.planning.spec",
    "parse_all_reduce_spec": "allreduce.planning.spec",
    "parse_general_int": "allreduce.planning.spec",
    "tune": "allreduce.tuning",
}

#: Subpackages loaded on first use (none of them imports TensorFlow when loaded).
_SUBPACKAGES = ("cluster", "spmd")

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
