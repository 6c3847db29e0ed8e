"""The SPMD entry points: :func:`all_reduce` and :func:`batch_all_reduce`.

Every worker runs the same program and calls these with the tensors of its own
devices; each gets the sums over every device of every worker back on its devices.
Calls are validated and planned as in :mod:`allreduce.api` (the same specs, size
ranges and packing), then :mod:`allreduce.spmd.emit` builds only this worker's ops.
Eagerly, each distinct call is traced once into a ``tf.function`` kept for the life of
the process: a trace takes new collective keys (:mod:`allreduce.spmd.keys`), so
evicting and tracing again on one worker only would leave it out of step with the
others.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from allreduce.cluster.errors import WorkerError
from allreduce.core._tf import tf
from allreduce.core.validation import (
    check_int,
    check_reduction,
    check_seconds,
    check_tensor_list,
    check_towers,
)
from allreduce.graph import eager as _eager
from allreduce.graph.compression import CastWire, wire_for
from allreduce.graph.local_devices import check_devices_exist
from allreduce.graph.wire import PLAIN
from allreduce.planning.devices import parse_device_name
from allreduce.planning.plan import DEFAULT_PACK_MAX_GROUP, Bucket, plan_batch
from allreduce.selection.auto import resolve_spec
from allreduce.spmd import keys, runtime
from allreduce.spmd.emit import SpmdOptions, emit_worker_batch
from allreduce.spmd.specs import CAPABLE, MODE, check_spmd_spec, cluster_devices, is_spmd_capable

__all__ = ["CAPABLE", "DEFAULT_TIMEOUT_S", "all_reduce", "batch_all_reduce", "check_spmd_spec"]

#: The most seconds one collective op waits for its peer unless ``timeout_s`` says otherwise.
DEFAULT_TIMEOUT_S = 30.0
_PEER = re.compile(r"(?:send_to|recv_from)_task_(\d+)")


@dataclass(frozen=True)
class _Request:
    """Everything that determines one worker's graph (the eager cache's key)."""

    devices: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[tf.DType, ...]
    buckets: tuple[Bucket, ...]
    options: SpmdOptions


def _local_devices(towers: Sequence[Sequence[tf.Tensor]], devices: Any, worker: runtime.Worker) -> list[str]:
    """One device of this worker per tower: ``devices``, the towers' own devices, or
    this worker's first CPUs."""
    if devices is None:
        found = [tower[0].device for tower in towers]
        devices = found if all(found) else [f"/device:CPU:{i}" for i in range(len(towers))]
    from allreduce.planning.devices import check_device_names

    names = []
    for name in check_device_names(devices, len(towers), "tower"):
        parsed = parse_device_name(name)
        if parsed.job is None:
            name = worker.device_prefix + "/device:" + f"{parsed.device_type}:{parsed.index or 0}"
        elif (parsed.job, parsed.task or 0) != (worker.job, worker.task):
            raise ValueError(f"device {name!r} is not a device of this worker ({worker.device_prefix})")
        names.append(name)
    check_devices_exist(names)
    return names


def _request(
    towers: Sequence[Sequence[tf.Tensor]],
    spec: Any,
    devices: Any,
    options: SpmdOptions,
    worker: runtime.Worker,
    packing: tuple[int, int],
) -> _Request:
    first = towers[0]
    for t in first:
        check_reduction(options.reduction, t.dtype)
    names = _local_devices(towers, devices, worker)
    kind = parse_device_name(names[0]).device_type or "CPU"
    shape = cluster_devices(worker.num_workers, len(names), kind)
    sizes = [t.shape.num_elements() for t in first]
    # "auto": the SPMD tuning of this cluster's shape, else the cost model's choice
    # among the specs that run in SPMD mode (docs/tuning.md).
    specs, _ = resolve_spec(spec, shape, sizes, first[0].dtype.name, mode=MODE, keep=is_spmd_capable)
    check_spmd_spec(specs, CAPABLE, options.wire.name)
    buckets = plan_batch(
        [t.shape.num_elements() for t in first],
        [t.dtype for t in first],
        [t.dtype.size for t in first],
        specs,
        pack_max_bytes=packing[0],
        pack_max_group=packing[1],
    )
    return _Request(
        tuple(names),
        tuple(tuple(t.shape.as_list()) for t in first),
        tuple(t.dtype for t in first),
        tuple(buckets),
        options,
    )


def _peer_error(
    err: tf.errors.OpError, worker: runtime.Worker, timeout_s: float
) -> WorkerError | ValueError | None:
    """A :class:`WorkerError` naming the peer of the failed exchange, when the error
    comes from one; a ``ValueError`` when TensorFlow found that the workers' calls
    differ (a shape or dtype of one exchange)."""
    text = f"{getattr(err.op, 'name', '')} {err.message}"
    found = _PEER.search(text)
    if found is None and "collective" not in text.lower():
        return None
    reason = "timeout" if isinstance(err, tf.errors.DeadlineExceededError) else "unreachable"
    if found is not None:
        peer = int(found.group(1))
        who = f"the exchange of worker {worker.rank} with {worker.describe(peer)}"
    else:
        peer = None
        who = f"a collective of worker {worker.rank} across all workers"
    if isinstance(err, tf.errors.InvalidArgumentError):
        return ValueError(
            f"{who} failed: the workers' calls differ (every worker must make the same SPMD calls "
            f"in the same order on each channel, with the same specs, shapes, dtypes and number of "
            f"local devices); TensorFlow's message: {err.message}"
        )
    message = (
        f"{who} failed ({type(err).__name__}): that worker, or one it waits for, died, stopped or "
        f"answered too late (each exchange waits at most {timeout_s:g} s); "
        f"TensorFlow's message: {err.message}"
    )
    return WorkerError(message, task=peer, reason=reason)


def _run(
    request: _Request, towers: Sequence[Sequence[tf.Tensor]], worker: runtime.Worker, scope: str
) -> list[list[tf.Tensor]]:
    def build(ts: Sequence[Sequence[tf.Tensor]]) -> list[list[tf.Tensor]]:
        with tf.name_scope(scope):
            return emit_worker_batch(ts, request.devices, request.buckets, request.options)

    if not tf.executing_eagerly():
        return build(towers)
    try:
        return _eager.call_function(_function(request, build), towers, request.devices)
    except tf.errors.OpError as err:
        wrapped = _peer_error(err, worker, request.options.timeout_s)
        if wrapped is None:
            raise
        raise wrapped from err


_lock = threading.Lock()
_functions: dict[_Request, Any] = {}


def _function(request: _Request, build: Any) -> Any:
    """The traced function of ``request``, made once per process (tracing happens on its
    first call, in the caller's order of calls)."""
    with _lock:
        function = _functions.get(request)
        if function is None:
            counts = [len(request.shapes)] * len(request.devices)
            function = _functions[request] = _eager.traceable(build, counts)
        return function


def _options(
    worker: runtime.Worker, channel: Any, reduction: Any, timeout_s: Any, compression: Any
) -> SpmdOptions:
    check_int("channel", channel, minimum=0)
    if channel >= keys.CHANNELS:
        raise ValueError(f"channel must be in 0..{keys.CHANNELS - 1}, got {channel}")
    seconds = check_seconds("timeout_s", timeout_s, allow_zero=False)
    wire = wire_for(compression)
    if wire is not PLAIN and not isinstance(wire, CastWire):
        raise TypeError(
            f"compression must be 'none', 'bf16', 'fp16' or a CastWire in SPMD mode, got {wire!r}"
        )
    return SpmdOptions(worker.rank, worker.num_workers, channel, reduction, seconds, wire)


@tf.autograph.experimental.do_not_convert
def all_reduce(
    local_tensors: Sequence[tf.Tensor],
    spec: str | Sequence[Any] = "xring",
    *,
    reduction: Literal["sum", "mean"] = "sum",
    devices: Sequence[str] | None = None,
    cluster: Any = None,
    channel: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    compression: str | CastWire = "none",
) -> list[tf.Tensor]:
    """Sums one tensor per local device over every device of every worker.

    Every worker calls it with the same spec, shapes and dtypes, and the same number
    of local tensors; calls pair up across workers by their order on each ``channel``
    (see docs/multiworker.md, "SPMD mode").

    Args:
        local_tensors: one tensor per device of this worker, all of one shape and dtype.
        spec: a spec whose across-workers level is ``xring``, ``rechd``, ``torus``,
            ``pscpu`` or ``collective`` (``A/B`` runs ``A`` within the worker; a flat
            name runs on both levels), or ``"auto"``: the tuning of this cluster's
            shape (:func:`allreduce.tuning.spmd.tune_spmd`), else the cost model's choice.
        reduction: ``"sum"`` or ``"mean"`` (over all devices of all workers).
        devices: this worker's device of each tensor; defaults to the tensors' own
            devices, or this worker's ``CPU:0..k-1`` inside a ``tf.function``.
        cluster: ``None`` (``TF_CONFIG``), a TF_CONFIG-style dict or a ClusterResolver.
        channel: ``0..15``; calls on different channels may run at the same time
            (for example one channel per thread).
        timeout_s: the most seconds each collective op waits for its peer.
        compression: ``"none"``, ``"bf16"`` or ``"fp16"`` (or a ``CastWire``): floating
            values cross between workers in that type, for ``xring``, ``rechd``,
            ``torus`` and ``pscpu`` across workers (a range's own ``@bf16`` wins). Within
            :func:`allreduce.spmd.error_bound` of the exact sum. For float16, every
            worker scales a bucket by the same power of two, agreed with one small
            ``Max`` collective per bucket before the exchange.

    Returns:
        One result per input, on its device, bitwise identical on every worker.

    Raises:
        TypeError, ValueError: bad arguments, an algorithm without an SPMD form,
            compression with ``collective`` across workers, a malformed cluster, a
            device of another worker, or (eager calls) a call that differs from a
            peer's in a way TensorFlow detects (a shape or dtype).
        WorkerError: (eager calls) an exchange failed or timed out; ``task`` names the
            peer where it is known.
    """
    dense = check_tensor_list(local_tensors, "local_tensors")
    worker = runtime.start(cluster)
    options = _options(worker, channel, reduction, timeout_s, compression)
    towers = [[t] for t in dense]
    request = _request(towers, spec, devices, options, worker, (0, DEFAULT_PACK_MAX_GROUP))
    return [tower[0] for tower in _run(request, towers, worker, "spmd_all_reduce")]


@tf.autograph.experimental.do_not_convert
def batch_all_reduce(
    local_towers: Sequence[Sequence[tf.Tensor]],
    spec: str | Sequence[Any] = "xring",
    *,
    reduction: Literal["sum", "mean"] = "sum",
    pack_max_bytes: int = 0,
    pack_max_group: int = DEFAULT_PACK_MAX_GROUP,
    devices: Sequence[str] | None = None,
    cluster: Any = None,
    channel: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    compression: str | CastWire = "none",
) -> list[list[tf.Tensor]]:
    """Sums many tensors per local device: ``local_towers[d][i]`` is tensor ``i`` on
    this worker's device ``d``; packing as in :func:`allreduce.batch_all_reduce`.

    Returns:
        ``result[d][i]`` on device ``d``, bitwise identical on every worker.

    Raises:
        As :func:`all_reduce`.
    """
    towers = check_towers(local_towers)
    packing = (
        check_int("pack_max_bytes", pack_max_bytes, minimum=0),
        check_int("pack_max_group", pack_max_group, minimum=1),
    )
    worker = runtime.start(cluster)
    options = _options(worker, channel, reduction, timeout_s, compression)
    if not towers[0]:
        return [[] for _ in towers]
    request = _request(towers, spec, devices, options, worker, packing)
    return _run(request, towers, worker, "spmd_batch_all_reduce")
