"""The spec-driven entry points: :func:`all_reduce` and :func:`batch_all_reduce`.

Both validate everything once per call, plan the batch in pure Python
(:func:`allreduce.planning.plan.plan_batch`) and emit it (:func:`allreduce.graph.emit.emit_batch`).
Inside a ``tf.function`` or a TensorFlow 1 graph the ops go into the graph being built.
Eagerly, the same graph is traced once into a ``tf.function`` kept in a bounded cache
(:mod:`allreduce.graph.eager`) and called: one call runs every op of the all-reduce
together, and no eager op with shape arguments runs, which TensorFlow 2.21 does not
keep apart between threads. Every entry point may be called from several threads.

AutoGraph never converts this library's code (it is plain graph-building Python):
tracing stays fast and prints no conversion warnings inside a user's ``tf.function``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from allreduce.core._tf import SUPPORTED_DTYPES, tf
from allreduce.core.tables import REDUCTIONS
from allreduce.core.validation import (
    check_int,
    check_reduction,
    check_seconds,
    check_tensor_list,
    check_towers,
    check_worker_groups,
)
from allreduce.graph import eager as _eager
from allreduce.graph.compression import wire_for
from allreduce.graph.emit import Options, emit_batch
from allreduce.graph.local_devices import check_devices_exist, check_tensor_devices
from allreduce.graph.wire import Wire
from allreduce.planning.devices import check_device_names, parse_device_name
from allreduce.planning.plan import DEFAULT_PACK_MAX_GROUP, Bucket, plan_batch
from allreduce.planning.registry import get_algorithm
from allreduce.planning.spec import AllReduceSpecTuple, check_spec
from allreduce.selection.auto import is_auto, resolve_spec

__all__ = ["DEFAULT_PACK_MAX_GROUP", "REDUCTIONS", "SUPPORTED_DTYPES", "all_reduce", "batch_all_reduce"]

Reduction = Literal["sum", "mean"]
WorkerGroups = Sequence[Sequence[int]]


@dataclass(frozen=True)
class Request:
    """Everything that determines the graph of one call (the eager cache's key)."""

    devices: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[tf.DType, ...]
    buckets: tuple[Bucket, ...]
    options: Options


def _tower_devices(towers: Sequence[Sequence[tf.Tensor]], devices: Sequence[str] | None) -> list[str]:
    """One device per tower: ``devices``, else the device its tensors share."""
    if devices is not None:
        names = check_device_names(devices, len(towers), "tower" if len(towers[0]) != 1 else "tensor")
        check_devices_exist(names)
        check_tensor_devices(towers, names)
    else:
        names = []
        for d, tower in enumerate(towers):
            found = {t.device for t in tower}
            if "" in found or not found:
                raise ValueError(
                    f"tower {d} holds a tensor without a device (a tf.function argument?); "
                    "pass devices=[...], one device per tower"
                )
            if len({parse_device_name(name) for name in found}) > 1:
                raise ValueError(
                    f"tower {d} holds tensors on several devices {sorted(found)}; pass devices=[...]"
                )
            names.append(tower[0].device)
    check_devices_exist(names)
    return names


def _request(
    towers: Sequence[Sequence[tf.Tensor]],
    spec: str | Sequence[AllReduceSpecTuple],
    devices: Sequence[str] | None,
    options: Options,
    packing: tuple[int, int],
) -> Request:
    """Checks a call and plans it. Raises ``TypeError``/``ValueError`` (see the callers)."""
    if not is_auto(spec):
        check_spec(spec)  # a bad spec is named before the tensors
    names = _tower_devices(towers, devices)
    first = towers[0]
    # "auto": the cached tuning or the cost model's choice for this batch; never measures.
    specs, _ = resolve_spec(spec, names, [t.shape.num_elements() for t in first], first[0].dtype.name)
    for t in first:
        check_reduction(options.reduction, t.dtype)
    groups = check_worker_groups(options.worker_groups, len(towers))
    options = Options(options.reduction, groups, options.timeout_s, options.wire)
    buckets = plan_batch(
        [t.shape.num_elements() for t in first],
        [t.dtype for t in first],
        [t.dtype.size for t in first],
        specs,
        pack_max_bytes=packing[0],
        pack_max_group=packing[1],
    )
    for chosen in {b.spec for b in buckets}:
        problem = get_algorithm(chosen.alg).problem(names, chosen.shards, groups)
        if problem is not None:
            raise ValueError(problem)
    return Request(
        devices=tuple(names),
        shapes=tuple(tuple(t.shape.as_list()) for t in first),
        dtypes=tuple(t.dtype for t in first),
        buckets=tuple(buckets),
        options=options,
    )


def _run(request: Request, towers: Sequence[Sequence[tf.Tensor]], scope: str) -> list[list[tf.Tensor]]:
    if not tf.executing_eagerly():
        return _emit(request, towers, scope)
    try:
        return _eager.call(request, towers, request.devices, lambda ts: _emit(request, ts, scope))
    except tf.errors.OpError as err:
        notes = {get_algorithm(b.spec.alg).failure_note for b in request.buckets} - {None}
        if not notes:
            raise
        message = f"{err.message}\n\nallreduce: " + "; ".join(sorted(notes))  # type: ignore[arg-type]
        raise type(err)(err.node_def, err.op, message) from err


def _emit(request: Request, towers: Sequence[Sequence[tf.Tensor]], scope: str) -> list[list[tf.Tensor]]:
    with tf.name_scope(scope):
        return emit_batch(towers, request.devices, request.buckets, request.options)


def _options(
    reduction: str, worker_groups: WorkerGroups | None, timeout_s: float, compression: str | Wire
) -> Options:
    seconds = check_seconds("timeout_s", timeout_s, allow_zero=True)
    return Options(reduction, worker_groups, seconds, wire_for(compression))  # type: ignore[arg-type]


@tf.autograph.experimental.do_not_convert
def all_reduce(
    tensors: Sequence[tf.Tensor],
    spec: str | Sequence[AllReduceSpecTuple] = "xring",
    *,
    reduction: Reduction = "sum",
    devices: Sequence[str] | None = None,
    worker_groups: WorkerGroups | None = None,
    timeout_s: float = 0.0,
    compression: str | Wire = "none",
) -> list[tf.Tensor]:
    """All-reduces one tensor per device with the algorithm ``spec`` names.

    Args:
        tensors: one tensor (or variable) per device, each on its device, all of one
            shape and dtype.
        spec: a spec string (see :mod:`allreduce.planning.spec`) or parsed spec tuples; with size
            ranges, the range that holds the tensor's element count is used.
            ``"auto"``: the spec :func:`allreduce.tune` cached for these devices, or
            the cost model's choice (see docs/tuning.md); it never measures.
        reduction: ``"sum"`` or ``"mean"`` (floating dtypes only).
        devices: the device of each tensor, for tensors that do not carry one
            (arguments of a ``tf.function``); defaults to each tensor's ``.device``.
            In eager mode it must agree with where each tensor is.
        worker_groups: input indices grouped by worker for hierarchical specs; by
            default devices are grouped by their ``/job/replica/task``.
        timeout_s: for ``collective``, the most seconds to wait for peers (0: none).
        compression: ``"none"``, ``"bf16"`` or ``"fp16"``: floating values cross devices
            in that type where bytes cost (see :mod:`allreduce.graph.compression`).

    Returns:
        One result per input, in order, each on its input's device; all results are
        bitwise identical (except for the no-reduction baseline ``trivial``).

    Raises:
        TypeError: ``tensors`` is not a list of dense tensors, or an argument has the
            wrong type.
        ValueError: no tensors; shapes or dtypes differ; an unsupported dtype or
            reduction; a malformed spec; a device that does not exist; a ``devices``
            entry that contradicts where an eager tensor is (the first one named); an
            algorithm that cannot run on these devices or honour the shard count.
            Raised while the graph is built.
    """
    dense = check_tensor_list(tensors)
    options = _options(reduction, worker_groups, timeout_s, compression)
    towers = [[t] for t in dense]
    request = _request(towers, spec, devices, options, (0, DEFAULT_PACK_MAX_GROUP))
    return [tower[0] for tower in _run(request, towers, "all_reduce")]


@tf.autograph.experimental.do_not_convert
def batch_all_reduce(
    tower_tensors: Sequence[Sequence[tf.Tensor]],
    spec: str | Sequence[AllReduceSpecTuple] = "xring",
    *,
    reduction: Reduction = "sum",
    pack_max_bytes: int = 0,
    pack_max_group: int = DEFAULT_PACK_MAX_GROUP,
    devices: Sequence[str] | None = None,
    worker_groups: WorkerGroups | None = None,
    timeout_s: float = 0.0,
    compression: str | Wire = "none",
) -> list[list[tf.Tensor]]:
    """All-reduces many tensors per device: ``tower_tensors[d][i]`` is tensor i on device d.

    Each tensor goes to the spec range that holds its element count; algorithms that
    pick devices round-robin (``pscpu``, ``better``) spread a batch over their devices.
    With ``pack_max_bytes > 0``, runs of small tensors of one dtype (at most that many
    bytes each, at most ``pack_max_group`` per pack) are concatenated first and split
    after, so that one all-reduce carries many small tensors.

    Args:
        tower_tensors: one list of tensors per device (a tower), all towers alike in
            length, shapes and dtypes; every tensor of a tower on the tower's device.
        devices: the device of each tower, for towers whose tensors carry none (in
            eager mode it must agree with where they are).
        Other arguments as in :func:`all_reduce`.

    Returns:
        ``result[d][i]``, shaped like ``tower_tensors[d][i]``, on tower d's device.

    Raises:
        TypeError, ValueError: as :func:`all_reduce`; a flat list of tensors is a
            ``TypeError`` (use :func:`all_reduce`); towers that differ in length, shape
            or dtype, and invalid packing options, are ``ValueError``.
    """
    towers = check_towers(tower_tensors)
    packing = (
        check_int("pack_max_bytes", pack_max_bytes, minimum=0),
        check_int("pack_max_group", pack_max_group, minimum=1),
    )
    options = _options(reduction, worker_groups, timeout_s, compression)
    if not towers[0]:
        if devices is not None:
            check_device_names(devices, len(towers), "tower")
        return [[] for _ in towers]
    request = _request(towers, spec, devices, options, packing)
    return _run(request, towers, "batch_all_reduce")
