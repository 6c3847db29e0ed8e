"""allreduce: classic all-reduce algorithms for TensorFlow 2 behind one spec language.

>>> import allreduce
>>> results = allreduce.all_reduce(tensors, "xring#2")        # doctest: +SKIP

The pure planning layer (:mod:`allreduce.spec`, :mod:`allreduce.devices`,
:mod:`allreduce.ranges`, :mod:`allreduce.schedules`, :mod:`allreduce.registry`) needs no
graph; :mod:`allreduce.algorithms` holds one module per algorithm.
"""

from __future__ import annotations

from allreduce._tf import tf as _tf  # noqa: F401  (fails early with install advice)
from allreduce.api import all_reduce, batch_all_reduce
from allreduce.cluster import WorkerError, local_cluster
from allreduce.compat import (
    aggregate_gradients_using_copy_with_device_selection,
    aggregate_single_gradient,
    sum_grad_and_var_all_reduce,
    sum_gradients_all_reduce,
)
from allreduce.cross_device_ops import SpecCrossDeviceOps
from allreduce.devices import build_all_reduce_device_prefixes, group_device_names
from allreduce.local_devices import logical_devices
from allreduce.packing import (
    GradPackTuple,
    pack_range,
    pack_small_tensors,
    split_grads_by_size,
    unpack_grad_tuple,
    unpack_small_tensors,
)
from allreduce.ranges import extract_ranges
from allreduce.registry import algorithm_names, get_algorithm
from allreduce.spec import (
    AllReduceSpecTuple,
    format_all_reduce_spec,
    parse_all_reduce_spec,
    parse_general_int,
)

__version__ = "0.1.0"

__all__ = [
    "AllReduceSpecTuple",
    "GradPackTuple",
    "SpecCrossDeviceOps",
    "WorkerError",
    "aggregate_gradients_using_copy_with_device_selection",
    "aggregate_single_gradient",
    "algorithm_names",
    "all_reduce",
    "batch_all_reduce",
    "build_all_reduce_device_prefixes",
    "extract_ranges",
    "format_all_reduce_spec",
    "get_algorithm",
    "group_device_names",
    "local_cluster",
    "logical_devices",
    "pack_range",
    "pack_small_tensors",
    "parse_all_reduce_spec",
    "parse_general_int",
    "split_grads_by_size",
    "sum_grad_and_var_all_reduce",
    "sum_gradients_all_reduce",
    "unpack_grad_tuple",
    "unpack_small_tensors",
]
