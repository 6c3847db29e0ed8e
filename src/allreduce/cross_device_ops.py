"""A ``tf.distribute.CrossDeviceOps`` whose reductions run the spec's algorithms.

>>> ops = allreduce.SpecCrossDeviceOps("pscpu:64k:xring#2", pack_max_bytes=4096)  # doctest: +SKIP
>>> strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=ops)     # doctest: +SKIP

Under ``MirroredStrategy``, Keras ``fit`` and ``ReplicaContext.all_reduce`` reach
:meth:`SpecCrossDeviceOps.batch_reduce`, which runs :func:`allreduce.batch_all_reduce`.
TensorFlow itself routes three things elsewhere before they get here: int32 values,
``strategy.reduce``/``reduce_to`` whose destination is a CPU or differs from the
value's devices (both go to ``ReductionToOneDevice``), and everything under XLA on GPUs
(``CollectiveAllReduce``).

The protocol passes and returns TensorFlow's distributed value types (``PerReplica``,
``Mirrored``), which exist only in ``tensorflow.python.distribute``; this module is the
one place that imports them, and only to read devices and wrap results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

# Private but required: the protocol's own helpers and value types (see module docstring).
from tensorflow.python.distribute import cross_device_ops as _tf_cross_device_ops
from tensorflow.python.distribute import device_util as _device_util
from tensorflow.python.distribute import distribute_utils as _distribute_utils
from tensorflow.python.distribute import values as _values

from allreduce import api as _api
from allreduce.core._tf import SUPPORTED_DTYPES, tf
from allreduce.core.validation import check_bool, check_int, check_seconds
from allreduce.graph.compression import wire_for
from allreduce.graph.wire import Wire
from allreduce.planning.registry import get_algorithm
from allreduce.planning.spec import check_spec
from allreduce.selection.auto import is_auto

__all__ = ["SpecCrossDeviceOps"]

logger = logging.getLogger(__name__)

_REDUCTIONS = {tf.distribute.ReduceOp.SUM: "sum", tf.distribute.ReduceOp.MEAN: "mean"}


def _densify(value: Any) -> Any:
    """An ``IndexedSlices`` as a dense tensor on its own device (the all-reduce checks
    that every input is where its replica is)."""
    with tf.device(value.device):
        return tf.convert_to_tensor(value)


def _devices_of(value_or_destinations: Any) -> tuple[str, ...]:
    """Canonical device names of a distributed value, variable, tensor or device string."""
    names = _tf_cross_device_ops.get_devices_from(value_or_destinations)
    return tuple(_device_util.canonicalize(d) for d in names)


def _mirrored(values: Sequence[Any]) -> Any:
    """One result per destination device, wrapped as TensorFlow's own ops wrap them."""
    return _distribute_utils.regroup(list(values), wrap_class=_values.Mirrored)


def _copies(value: tf.Tensor, devices: Sequence[str]) -> list[tf.Tensor]:
    """A copy of ``value`` on each device."""
    out = []
    for device in devices:
        with tf.device(device):
            out.append(tf.identity(value))
    return out


def _label(value: Any) -> str:
    """A name for error messages: the graph tensor's name where there is one."""
    try:
        return value.name
    except (AttributeError, ValueError):  # eager tensors have no name
        return "an eager tensor"


class SpecCrossDeviceOps(tf.distribute.CrossDeviceOps):
    """Cross-device reductions for ``tf.distribute.MirroredStrategy``, driven by a spec.

    Dense values are all-reduced with :func:`allreduce.batch_all_reduce` (``spec``,
    packing); the results on all devices are bitwise identical. ``tf.IndexedSlices``
    (e.g. ``Embedding`` gradients) are gathered: each destination receives the
    concatenated values and indices of all replicas, which is their sum as
    IndexedSlices (values divided by the replica count for MEAN). A sparse value whose
    dense shape has at most ``densify_max_elements`` elements is densified instead and
    all-reduced like a dense one (the result is then a dense tensor).

    A destination other than the value's own devices (``batch_reduce_to(v, "/cpu:0")``)
    is served by all-reducing over the value's devices with ``spec`` and copying the
    result to each destination device. Values the algorithms cannot take (a dtype such
    as ``bool`` or ``complex64``, an integer MEAN, a shape that is not fully defined) go
    to ``tf.distribute.ReductionToOneDevice``, with a logged warning naming the reason.
    Replicas whose values differ in shape or dtype raise ``ValueError``.
    """

    def __init__(
        self,
        spec: str = "xring",
        *,
        pack_max_bytes: int = 0,
        pack_max_group: int = _api.DEFAULT_PACK_MAX_GROUP,
        densify_max_elements: int = 0,
        check_finite: bool = False,
        timeout_s: float = 0.0,
        compression: str | Wire = "none",
    ) -> None:
        """
        Args:
            spec: the spec string (``"xring"``, ``"pscpu:64k:xring#2"``), or ``"auto"``
                for the tuned spec of each batch's devices and sizes (docs/tuning.md).
            pack_max_bytes, pack_max_group: packing of small dense tensors, as in
                :func:`allreduce.batch_all_reduce` (0 bytes: no packing).
            densify_max_elements: sparse values whose dense shape holds at most this
                many elements are densified and all-reduced with ``spec``; larger ones
                (and all, with the default 0) are gathered as IndexedSlices.
            check_finite: check every reduced floating value on every device; a NaN
                or Inf raises ``tf.errors.InvalidArgumentError`` when the step runs,
                with a message naming the value (its index in the batch, its graph
                tensor name, shape and dtype).
            timeout_s: for the ``collective`` algorithm, the most seconds to wait.
            compression: ``"none"``, ``"bf16"`` or ``"fp16"``, or a wire such as
                ``allreduce.graph.compression.CastWire("bf16", everywhere=True)``, as in
                :func:`allreduce.batch_all_reduce`.

        Raises:
            TypeError: ``spec`` is not a string, or an option has the wrong type.
            ValueError: a malformed spec, a spec with an algorithm that does not reduce
                (``trivial``), or an option value out of range.
        """
        super().__init__()
        if not isinstance(spec, str):
            raise TypeError(
                f"spec must be a spec string such as 'xring', got {type(spec).__name__}: {spec!r}"
            )
        # "auto" is resolved per batch at its first step (allreduce.selection.auto).
        for item in [] if is_auto(spec) else check_spec(spec):  # a bad spec raises now
            if not get_algorithm(item.alg).reduces:
                raise ValueError(
                    f"spec {spec!r} names {item.alg!r}, which does not reduce: replicas would train "
                    "apart; choose an algorithm that sums, e.g. 'xring'"
                )
        self.spec = spec
        self.pack_max_bytes = check_int("pack_max_bytes", pack_max_bytes, minimum=0)
        self.pack_max_group = check_int("pack_max_group", pack_max_group, minimum=1)
        self.densify_max_elements = check_int("densify_max_elements", densify_max_elements, minimum=0)
        self.check_finite = check_bool("check_finite", check_finite)
        self.timeout_s = check_seconds("timeout_s", timeout_s, allow_zero=True)
        wire_for(compression)  # raises TypeError/ValueError now rather than at the first step
        self.compression = compression
        self._fallback = tf.distribute.ReductionToOneDevice()
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"SpecCrossDeviceOps(spec={self.spec!r}, pack_max_bytes={self.pack_max_bytes}, "
            f"pack_max_group={self.pack_max_group}, densify_max_elements={self.densify_max_elements}, "
            f"check_finite={self.check_finite}, compression={self.compression!r})"
        )

    # -- the CrossDeviceOps protocol ------------------------------------------------------

    def reduce_implementation(
        self, reduce_op: Any, per_replica_value: Any, destinations: Any, options: Any
    ) -> Any:
        """Reduces one distributed value to ``destinations`` (see the class docstring)."""
        return self.batch_reduce_implementation(reduce_op, [(per_replica_value, destinations)], options)[0]

    def batch_reduce_implementation(
        self, reduce_op: Any, value_destination_pairs: Sequence[tuple[Any, Any]], options: Any
    ) -> list[Any]:
        """Reduces each ``(value, destinations)`` pair; dense values of the same devices
        share one :func:`allreduce.batch_all_reduce` (``options`` is not used: packing
        and timeouts come from the constructor)."""
        del options
        reduction = _REDUCTIONS.get(reduce_op)
        if reduction is None:
            raise ValueError(f"reduce_op must be tf.distribute.ReduceOp.SUM or MEAN, got {reduce_op!r}")
        results: list[Any] = [None] * len(value_destination_pairs)
        dense: dict[tuple[str, ...], list[tuple[int, list[Any]]]] = {}
        for i, (value, destinations) in enumerate(value_destination_pairs):
            parts = list(value.values)
            if self._stays_sparse(parts):
                results[i] = self._gather_sparse(parts, _devices_of(destinations), reduction, i)
                continue
            parts = [_densify(p) if isinstance(p, tf.IndexedSlices) else p for p in parts]
            reason = self._fallback_reason(parts, reduction)
            if reason is not None:
                self._warn_once(reason)
                results[i] = self._fallback.reduce(reduce_op, value, destinations)
                continue
            dense.setdefault(_devices_of(value), []).append((i, parts))
        for sources, members in dense.items():
            reduced = self._all_reduce_dense(sources, [parts for _, parts in members], reduction)
            for (i, parts), per_device in zip(members, reduced):
                targets = _devices_of(value_destination_pairs[i][1])
                results[i] = self._place(per_device, sources, targets, i, parts[0])
        return results

    def _all_reduce_dense(
        self, sources: Sequence[str], values: Sequence[Sequence[Any]], reduction: str
    ) -> list[list[Any]]:
        """``result[j][d]``: dense value ``j`` all-reduced, on device ``sources[d]``."""
        logger.debug(
            "batch all-reduce of %d values over %d devices with %r", len(values), len(sources), self.spec
        )
        towers = [[parts[d] for parts in values] for d in range(len(sources))]
        reduced = _api.batch_all_reduce(
            towers,
            self.spec,
            reduction=reduction,
            pack_max_bytes=self.pack_max_bytes,
            pack_max_group=self.pack_max_group,
            devices=list(sources),
            timeout_s=self.timeout_s,
            compression=self.compression,
        )
        return [[reduced[d][j] for d in range(len(sources))] for j in range(len(values))]

    def broadcast_implementation(self, tensor: Any, destinations: Any) -> Any:
        """Copies ``tensor`` to every destination device (a ``Mirrored`` value)."""
        targets = _devices_of(destinations)
        if isinstance(tensor, tf.IndexedSlices):
            copies = [self._copy_slices(tensor, d) for d in targets]
        else:
            copies = _copies(tensor, targets)
        return _distribute_utils.regroup(copies, wrap_class=_values.Mirrored, always_wrap=True)

    def _gather_implementation(
        self, per_replica_value: Any, destinations: Any, axis: int, options: Any
    ) -> Any:
        """Concatenates the replicas' values along ``axis`` on each destination device."""
        del options
        parts = list(per_replica_value.values)
        targets = _devices_of(destinations)
        with tf.device(targets[0]):
            gathered = tf.concat(parts, axis=axis)
        return _mirrored([gathered, *_copies(gathered, targets[1:])])

    # -- helpers ---------------------------------------------------------------------------

    def _stays_sparse(self, parts: Sequence[Any]) -> bool:
        """Whether these per-replica values are IndexedSlices to gather rather than
        densify (a dense shape above ``densify_max_elements``, or not known)."""
        if not all(isinstance(p, tf.IndexedSlices) for p in parts):
            return False
        if self.densify_max_elements == 0 or parts[0].dense_shape is None:
            return True
        shape = tf.get_static_value(parts[0].dense_shape)
        if shape is None:
            return True
        elements = 1
        for dim in shape:
            elements *= int(dim)
        return elements > self.densify_max_elements

    @staticmethod
    def _fallback_reason(parts: Sequence[Any], reduction: str) -> str | None:
        """Why the algorithms cannot reduce these per-replica tensors (they then go to
        ``ReductionToOneDevice``), or ``None`` when they can.

        Raises:
            TypeError: a dtype no reduction can add (``bool``, ``string``).
            ValueError: the replicas' values differ in dtype or shape.
        """
        first = parts[0]
        if first.dtype in (tf.bool, tf.string):
            raise TypeError(
                f"SpecCrossDeviceOps cannot reduce {first.dtype.name} values, and neither can "
                "tf.distribute's own reductions; cast them to a numeric dtype first"
            )
        if first.dtype not in SUPPORTED_DTYPES:
            return f"dtype {first.dtype.name} is not one the algorithms reduce"
        if reduction == "mean" and first.dtype.is_integer:
            return f"a MEAN of {first.dtype.name} values"
        if any(p.dtype != first.dtype or not p.shape.is_compatible_with(first.shape) for p in parts):
            found = ", ".join(f"{p.dtype.name}{p.shape}" for p in parts)
            raise ValueError(f"replicas hold values of different shapes or dtypes: {found}")
        if not all(p.shape.is_fully_defined() for p in parts):
            return f"shape {first.shape} is not fully defined"
        return None

    def _warn_once(self, problem: str) -> None:
        if problem not in self._warned:
            self._warned.add(problem)
            logger.warning("SpecCrossDeviceOps: %s; reducing it with ReductionToOneDevice instead", problem)

    def _finite_checked(self, value: Any, index: int, source: Any) -> Any:
        """``value``, with a NaN/Inf check attached when ``check_finite`` is on."""
        if not self.check_finite or not value.dtype.is_floating:
            return value
        message = (
            f"SpecCrossDeviceOps(spec={self.spec!r}): reduced value {index} "
            f"(from {_label(source)}, shape {value.shape}, {value.dtype.name}) holds NaN or Inf"
        )
        return tf.debugging.check_numerics(value, message)

    def _place(
        self,
        per_device: Sequence[tf.Tensor],
        sources: Sequence[str],
        targets: Sequence[str],
        index: int,
        source: Any,
    ) -> Any:
        """The all-reduced ``per_device`` results, one per target device."""
        out = []
        for target in targets:
            if target in sources:
                value = per_device[sources.index(target)]
            else:
                with tf.device(target):
                    value = tf.identity(per_device[0])
            with tf.device(target):
                out.append(self._finite_checked(value, index, source))
        return _mirrored(out)

    @staticmethod
    def _copy_slices(value: tf.IndexedSlices, device: str) -> tf.IndexedSlices:
        with tf.device(device):
            return tf.IndexedSlices(
                tf.identity(value.values),
                tf.identity(value.indices),
                None if value.dense_shape is None else tf.identity(value.dense_shape),
            )

    def _gather_sparse(
        self, parts: Sequence[tf.IndexedSlices], targets: Sequence[str], reduction: str, index: int
    ) -> Any:
        """The sum of IndexedSlices without densifying: every replica's rows, concatenated."""
        index_dtype = tf.int64 if any(p.indices.dtype == tf.int64 for p in parts) else parts[0].indices.dtype
        out = []
        for target in targets:
            with tf.device(target):
                values = tf.concat([p.values for p in parts], axis=0)
                indices = tf.concat([tf.cast(p.indices, index_dtype) for p in parts], axis=0)
                if reduction == "mean" and len(parts) > 1:
                    values = tf.math.truediv(values, tf.constant(len(parts), dtype=values.dtype))
                values = self._finite_checked(values, index, parts[0].values)
                dense_shape = None if parts[0].dense_shape is None else tf.identity(parts[0].dense_shape)
                out.append(tf.IndexedSlices(values, indices, dense_shape))
        return _mirrored(out)
