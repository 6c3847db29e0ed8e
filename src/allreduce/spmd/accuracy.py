"""How far a compressed SPMD all-reduce may be from the exact sum (pure Python).

A worker reduces its own devices with the spec's lower level (no compression: its
devices share memory), the workers all-reduce those sums with the upper level's
pairwise program through the wire, and each worker copies the result to its devices.
Along every path from an input to a result that is no more roundings than the
one-client mode's ``lower/upper`` over the same grouping of devices into workers
(which also counts the lower level's hops and the final broadcast as compressed), so
:func:`error_bound` is that bound: :func:`allreduce.error_bound` of the spec written
as ``lower/upper``, with ``worker_groups`` of ``devices_per_worker`` inputs each.
float16's scale is the one-client formula for ``num_workers * devices_per_worker``
inputs, so its underflow term is the same too.
"""

from __future__ import annotations

from typing import Any

from allreduce.core.validation import check_int
from allreduce.planning.accuracy import ErrorBound
from allreduce.planning.accuracy import error_bound as _one_client_bound
from allreduce.planning.registry import get_algorithm
from allreduce.planning.spec import check_spec
from allreduce.spmd.specs import check_spmd_spec

__layer__ = "model"

__all__ = ["error_bound"]


def error_bound(
    spec: Any,
    num_workers: int,
    devices_per_worker: int = 1,
    compression: Any = "none",
    *,
    dtype: Any = "float32",
    reduction: str = "sum",
) -> ErrorBound:
    """The bound on how far each output of :func:`allreduce.spmd.all_reduce` with ``spec``
    over ``num_workers`` workers of ``devices_per_worker`` devices may be from the exact
    sum (or mean); ``ErrorBound.limit(sum|x_i|, max|x|)`` gives it per element.

    Raises:
        TypeError, ValueError: as :func:`allreduce.error_bound`, a bad worker or device
            count, or a spec that :func:`allreduce.spmd.all_reduce` refuses with this
            compression (no SPMD form; compression with ``collective`` across workers).
    """
    check_int("num_workers", num_workers, minimum=1)
    check_int("devices_per_worker", devices_per_worker, minimum=1)
    specs = check_spec(spec)
    wire = compression if isinstance(compression, str) else getattr(compression, "name", None)
    if isinstance(wire, str):  # anything else: allreduce.error_bound names it below
        check_spmd_spec(specs, compression=wire)
    ranges = []
    for item in specs:
        info = get_algorithm(item.alg)
        alg = item.alg if info.levels else f"{item.alg}/{item.alg}"
        ranges.append(item._replace(alg=alg))
    n = num_workers * devices_per_worker
    groups = [list(range(w * devices_per_worker, (w + 1) * devices_per_worker)) for w in range(num_workers)]
    return _one_client_bound(ranges, n, compression, dtype=dtype, worker_groups=groups, reduction=reduction)
