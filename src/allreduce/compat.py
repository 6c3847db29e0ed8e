"""The seed's function names and signatures, over the spec-driven core.

Code written for the TensorFlow 1 ``allreduce`` utilities runs unchanged, with three
documented differences: every function sums (the old ``better`` averaged; pass
``use_mean=True`` for a mean), the NaN/Inf flag is returned instead of dropped, and
devices are taken from the gradients themselves (``dev_prefixes`` and
``gpu_indices`` are accepted and checked but not needed to place anything).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from allreduce.api import batch_all_reduce
from allreduce.core._tf import tf
from allreduce.core.validation import check_int
from allreduce.graph.compression import wire_for
from allreduce.graph.packing import pack_small_tensors, validate_tower_grads
from allreduce.graph.wire import Wire
from allreduce.planning.devices import group_by_worker
from allreduce.planning.registry import get_algorithm
from allreduce.selection.auto import is_auto

__all__ = [
    "aggregate_gradients_using_copy_with_device_selection",
    "aggregate_single_gradient",
    "sum_grad_and_var_all_reduce",
    "sum_gradients_all_reduce",
]


def _has_nan_or_inf(grads: Sequence[tf.Tensor]) -> tf.Tensor:
    checks = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g.dtype.is_floating]
    if not checks:
        return tf.constant(False)
    return tf.logical_not(tf.reduce_all(tf.stack(checks)))


def aggregate_single_gradient(
    grad_and_vars: Sequence[Sequence[Any]], use_mean: bool = False, check_inf_nan: bool = False
) -> tuple[tuple[tf.Tensor, Any], tf.Tensor | None]:
    """Sums (or averages) one variable's gradient over the towers, on the current device.

    Returns:
        ``((grad, var), has_nan_or_inf)``: ``var`` is the first tower's variable and
        ``has_nan_or_inf`` a boolean scalar tensor, or ``None`` unless ``check_inf_nan``.

    Raises:
        ValueError: no gradients, or they differ in shape or dtype.
    """
    if not grad_and_vars:
        raise ValueError("grad_and_vars is empty: expected one (grad, var) per tower")
    validate_tower_grads([[pair] for pair in grad_and_vars])
    grads = [g for g, _ in grad_and_vars]
    grad = tf.add_n(grads)
    if use_mean and len(grads) > 1:
        grad = tf.math.truediv(grad, tf.constant(len(grads), dtype=grad.dtype))
    flag = _has_nan_or_inf(grads) if check_inf_nan else None
    return (grad, grad_and_vars[0][1]), flag


def aggregate_gradients_using_copy_with_device_selection(
    tower_grads: Sequence[Sequence[Any]],
    avail_devices: Sequence[str],
    use_mean: bool = False,
    check_inf_nan: bool = False,
) -> tuple[list[tuple[tf.Tensor, Any]], tf.Tensor | None]:
    """Sums each variable's gradients on ``avail_devices[i % len(avail_devices)]``.

    Returns:
        ``([(grad, var), ...], has_nan_or_inf)``: one aggregated pair per variable, and
        a boolean scalar that is true when any gradient holds a NaN or an Inf (``None``
        unless ``check_inf_nan``).

    Raises:
        ValueError: no devices, or the towers disagree.
    """
    if not avail_devices or isinstance(avail_devices, str):
        raise ValueError(f"avail_devices must be a non-empty list of device names, got {avail_devices!r}")
    validate_tower_grads(tower_grads)
    aggregated, flags = [], []
    for i, single in enumerate(zip(*tower_grads)):
        with tf.device(avail_devices[i % len(avail_devices)]):
            pair, flag = aggregate_single_gradient(single, use_mean, check_inf_nan)
        aggregated.append(pair)
        flags.append(flag)
    if not check_inf_nan:
        return aggregated, None
    if not flags:
        return aggregated, tf.constant(False)
    return aggregated, tf.reduce_any(tf.stack(flags))


def _spec_for(alg: str, num_shards: int) -> str:
    """``alg`` as a spec: a whole spec or ``"auto"`` as it is, a bare name with the seed's shard count."""
    if is_auto(alg) or any(c in alg for c in ":#@"):
        return alg
    info = get_algorithm(alg)
    if num_shards > 1 and info.takes_shards:
        return f"{alg}#{num_shards}"
    return alg


def _worker_groups(devices: Sequence[str], num_workers: int) -> list[list[int]] | None:
    by_task = group_by_worker(devices)
    if num_workers <= 1 or len(by_task) > 1:
        return None
    if len(devices) % num_workers:
        raise ValueError(f"{len(devices)} devices on one task cannot form num_workers={num_workers} workers")
    size = len(devices) // num_workers
    return [list(range(w * size, (w + 1) * size)) for w in range(num_workers)]


def sum_grad_and_var_all_reduce(
    grad_and_vars: Sequence[Sequence[Any]],
    num_workers: int,
    alg: str,
    gpu_indices: Sequence[int],
    aux_devices: Sequence[str] | None = None,
    num_shards: int = 1,
    use_mean: bool = False,
) -> list[list[Any]]:
    """All-reduces one variable's gradient over the towers with algorithm ``alg``.

    Returns:
        One ``[summed_grad, var]`` per tower, each on its tower's device.

    Raises:
        ValueError: as :func:`allreduce.all_reduce`.
    """
    tower_grads = [[pair] for pair in grad_and_vars]
    reduced, _ = sum_gradients_all_reduce(
        [], tower_grads, num_workers, alg, num_shards, gpu_indices, use_mean=use_mean
    )
    return [list(tower[0]) for tower in reduced]


def sum_gradients_all_reduce(
    dev_prefixes: Sequence[str] | str,
    tower_grads: Sequence[Sequence[Any]],
    num_workers: int,
    alg: str,
    num_shards: int,
    gpu_indices: Sequence[int],
    agg_small_grads_max_bytes: int = 0,
    use_mean: bool = False,
    compression: str | Wire = "none",
) -> tuple[list[list[tuple[tf.Tensor, Any]]], dict | None]:
    """All-reduces every tower's gradients, packing small ones first when asked.

    ``alg`` is an algorithm name (``xring``, ``pscpu/pscpu``) or a whole spec;
    ``num_shards`` applies to algorithms that take a shard count. With
    ``num_workers > 1`` and all devices on one task, the towers are split into that
    many equal workers for hierarchical algorithms. ``compression`` (``"none"``,
    ``"bf16"``, ``"fp16"`` or a wire) is as in :func:`allreduce.batch_all_reduce`.

    Returns:
        ``(new_tower_grads, packing)``: pass both to
        :func:`allreduce.unpack_small_tensors` to restore the original layout
        (``packing`` is ``None`` when nothing was packed).

    Raises:
        TypeError, ValueError: as :func:`allreduce.all_reduce` (an unknown compression is
            a ``ValueError``), and for a bad ``num_workers``.
    """
    wire_for(compression)  # raises before any packing
    validate_tower_grads(tower_grads)
    check_int("num_workers", num_workers, minimum=1)
    if list(gpu_indices) and len(set(gpu_indices)) != len(list(gpu_indices)):
        raise ValueError(f"gpu_indices has repeats: {list(gpu_indices)}")
    spec = _spec_for(alg, num_shards)
    if agg_small_grads_max_bytes > 0:
        tower_grads, packing = pack_small_tensors(tower_grads, max_bytes=agg_small_grads_max_bytes)
    else:
        packing = None
    devices = [tower[0][0].device if tower else "" for tower in tower_grads]
    groups = _worker_groups(devices, num_workers) if all(devices) else None
    reduced = batch_all_reduce(
        [[g for g, _ in tower] for tower in tower_grads],
        spec,
        reduction="mean" if use_mean else "sum",
        worker_groups=groups,
        compression=compression,
    )
    new_tower_grads = [
        [(g, var) for g, (_, var) in zip(summed, tower)] for summed, tower in zip(reduced, tower_grads)
    ]
    return new_tower_grads, packing
