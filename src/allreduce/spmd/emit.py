"""One worker's ops of an SPMD all-reduce: a per-worker program (:mod:`allreduce.spmd.programs`)
turned into pairwise ``CollectiveBcastSendV2`` / ``CollectiveBcastRecvV2`` ops.

The worker's local devices are reduced first with the spec's lower level (the
one-client builders, :func:`allreduce.graph.algorithms.base.reduce_to_one`), its sum is
all-reduced across workers on the worker's first device (TensorFlow fixes a
group's devices, so every exchange of a pair must run on the same two devices), and
the result is copied to the local devices. ``collective`` across workers is one ``CollectiveReduceV2``
per device. Every collective op carries ``timeout_seconds`` and is named after its peer
(``send_to_task_3``), so that a failure names the worker it waited for.

With compression, the pieces that cross between workers go through the bucket's wire
(:class:`~allreduce.graph.compression.CastWire`), float16 after a scale every worker
agrees on (:func:`_agreed_scale`); a worker's own devices are summed uncompressed.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import (
    BuildContext,
    concat_1d,
    constant_on,
    graph_cached,
    reduce_to_one,
    split_1d,
)
from allreduce.graph.compression import SCALE_SCOPE, CastWire, largest_finite, scale_for, wire_for
from allreduce.graph.wire import PLAIN, Wire
from allreduce.planning.plan import Bucket
from allreduce.planning.registry import get_algorithm
from allreduce.planning.wire_formats import FLOAT_FORMATS, needs_scaling
from allreduce.spmd import keys
from allreduce.spmd.programs import Program, Recv, Send, SumCollected, program

__all__ = ["SpmdOptions", "emit_worker_batch", "levels"]

_slots = keys.SlotCounter()


@dataclass(frozen=True)
class SpmdOptions:
    """How one worker's batch is reduced: ``rank`` of ``num_workers``, the call's
    ``channel``, the ``reduction``, the collective ops' ``timeout_s`` and the ``wire``
    between workers (a spec range's own ``@bf16`` wins over it)."""

    rank: int
    num_workers: int
    channel: int = 0
    reduction: str = "sum"
    timeout_s: float = 30.0
    wire: Wire = PLAIN


def levels(alg: str) -> tuple[str, str]:
    """The (within a worker, across workers) algorithms of a spec's algorithm name: a
    flat name is used for both levels."""
    info = get_algorithm(alg)
    return info.levels if info.levels else (alg, alg)  # type: ignore[return-value]


class _Store:
    """The pieces of the vector a worker holds, by element interval; splits and joins
    pieces as exchanges ask for other intervals."""

    def __init__(self, value: tf.Tensor, device: str, length: int, cuts: Sequence[int]) -> None:
        self.device = device
        bounds = [0, *cuts, length]
        pieces = (
            [value] if not cuts else split_1d(value, device, [b - a for a, b in itertools.pairwise(bounds)])
        )
        self.starts = bounds[:-1]
        self.pieces = dict(zip(self.starts, zip(bounds[1:], pieces)))

    def _cut(self, at: int) -> None:
        i = bisect.bisect_right(self.starts, at) - 1
        start = self.starts[i]
        stop, piece = self.pieces[start]
        if start == at or at >= stop:
            return
        low, high = split_1d(piece, self.device, [at - start, stop - at])
        self.pieces[start] = (at, low)
        self.pieces[at] = (stop, high)
        self.starts.insert(i + 1, at)

    def get(self, start: int, stop: int) -> tf.Tensor:
        self._cut(start)
        self._cut(stop)
        i = self.starts.index(start)
        parts = []
        while i < len(self.starts) and self.starts[i] < stop:
            parts.append(self.pieces[self.starts[i]][1])
            i += 1
        return parts[0] if len(parts) == 1 else concat_1d(parts, self.device)

    def put(self, start: int, stop: int, value: tf.Tensor) -> None:
        self._cut(start)
        self._cut(stop)
        inside = [s for s in self.starts if start <= s < stop]
        for s in inside:
            del self.pieces[s]
            self.starts.remove(s)
        bisect.insort(self.starts, start)
        self.pieces[start] = (stop, value)


def _key_args(options: SpmdOptions, first_slot: int, slot: int, src: int, dst: int, device: str) -> dict:
    # Sizes and group keys recur: one constant each per graph (instance keys do not).
    return {
        "group_size": constant_on(2, device),
        "group_key": constant_on(keys.pair_group_key(src, dst), device),
        "instance_key": keys.instance_key(options.channel, first_slot + slot, src, dst),
        "timeout_seconds": float(options.timeout_s),
    }


def run_program(
    value: tf.Tensor, device: str, prog: Program, first_slot: int, options: SpmdOptions, wire: Wire = PLAIN
) -> tuple[tf.Tensor, list[tf.Operation]]:
    """The all-reduced ``value`` (1-D, on ``device``) after ``prog``, and the send ops,
    which nothing consumes (the caller makes the results wait for them).

    With a compressing ``wire`` (a :class:`~allreduce.graph.compression.CastWire` for
    ``value``'s dtype), every piece crosses in the wire type and is added in ``value``'s
    own dtype where it arrives; a sender keeps the decoded packet in place of what it
    sent, so that the final value of an element, published once by the worker that
    summed it, is the same decoded packet on every worker (a partial sum a worker sends
    is always overwritten later; re-encoding a decoded packet is exact).
    """
    me = options.rank
    length = value.shape[0]
    store = _Store(value, device, length, prog.cuts)
    coded = wire is not PLAIN
    sends, collected = [], {}
    with tf.device(device):
        for action in prog.actions:
            if isinstance(action, Send):
                piece = store.get(action.start, action.stop)
                if coded:
                    packet = wire.encode(piece)
                    store.put(action.start, action.stop, wire.decode(packet, value.dtype))
                    piece = _carry(packet)
                args = _key_args(options, first_slot, action.slot, me, action.peer, device)
                sends.append(
                    tf.raw_ops.CollectiveBcastSendV2(input=piece, name=f"send_to_task_{action.peer}", **args)
                )
            elif isinstance(action, Recv):
                args = _key_args(options, first_slot, action.slot, action.peer, me, device)
                got = tf.raw_ops.CollectiveBcastRecvV2(
                    shape=constant_on((action.stop - action.start,), device),
                    T=_CARRIER.get(wire.dtype, wire.dtype) if coded else value.dtype,  # type: ignore[attr-defined]
                    name=f"recv_from_task_{action.peer}",
                    **args,
                )
                got = wire.decode(_uncarry(got, wire.dtype), value.dtype) if coded else got  # type: ignore[attr-defined]
                _receive(store, action, got, collected)
            else:
                assert isinstance(action, SumCollected)
                parts = {**collected, me: store.get(action.start, action.stop)}
                store.put(action.start, action.stop, tf.add_n([parts[q] for q in sorted(parts)]))
                collected.clear()
        return store.get(0, length), [s.op for s in sends]


#: The dtype a wire type travels as where the collective ops have no kernel for it (its bits, unchanged).
_CARRIER = {tf.bfloat16: tf.float16}


def _carry(packet: tf.Tensor) -> tf.Tensor:
    carrier = _CARRIER.get(packet.dtype)
    return packet if carrier is None else tf.bitcast(packet, carrier)


def _uncarry(got: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    return got if got.dtype == dtype else tf.bitcast(got, dtype)


def _receive(store: _Store, action: Recv, got: tf.Tensor, collected: dict[int, tf.Tensor]) -> None:
    """Adds ``got`` to what ``store`` holds, sets it in its place, or collects it."""
    if action.mode == "add":
        store.put(action.start, action.stop, tf.add(got, store.get(action.start, action.stop)))
    elif action.mode == "set":
        store.put(action.start, action.stop, got)
    else:
        collected[action.peer] = got


def _ordering_token(device: str) -> tf.Tensor:
    def make() -> tf.Tensor:
        with tf.control_dependencies(None), tf.device(device), tf.name_scope("allreduce_spmd_token"):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="", container="")

    return graph_cached(("spmd ordering token", device), make)


def collective(
    values: Sequence[tf.Tensor],
    devices: Sequence[str],
    slot: int,
    options: SpmdOptions,
    merge_op: str = "Add",
) -> list[tf.Tensor]:
    """``CollectiveReduceV2`` (``merge_op``: ``"Add"`` or ``"Max"``) of ``values`` (one per
    local device) over every worker's devices."""
    size = options.num_workers * len(devices)
    instance = keys.instance_key(options.channel, slot, 0, 1)
    out = []
    for value, device in zip(values, devices):
        with tf.device(device):
            out.append(
                tf.raw_ops.CollectiveReduceV2(
                    input=value,
                    group_size=size,
                    group_key=keys.all_group_key(len(devices)),
                    instance_key=instance,
                    ordering_token=[_ordering_token(device)],
                    merge_op=merge_op,
                    final_op="Id",
                    timeout_seconds=float(options.timeout_s),
                    name="collective_all_workers",
                )
            )
    return out


def _reduce_flat(
    flat: list[tf.Tensor], devices: Sequence[str], bucket: Bucket, options: SpmdOptions
) -> tuple[list[tf.Tensor], list[tf.Operation]]:
    """Every local device's all-reduced flat bucket, and the send ops it waits for."""
    lower, upper = levels(bucket.spec.alg)
    if upper == "collective" and lower == "collective":
        return collective(flat, devices, _slots.reserve(options.channel, 1), options), []
    ctx = BuildContext(info=get_algorithm(lower), tensor_index=bucket.index)
    total, where = reduce_to_one(flat, devices, ctx) if len(flat) > 1 else (flat[0], devices[0])
    if where != devices[0]:
        # A pair group is a fixed pair of devices: every exchange of a worker runs on its
        # first device, whichever device the lower level left the sum on.
        with tf.device(devices[0]):
            total, where = tf.identity(total), devices[0]
    sends: list[tf.Operation] = []
    if options.num_workers > 1:
        if upper == "collective":
            total = collective([total], [where], _slots.reserve(options.channel, 1), options)[0]
        else:
            total, sends = _across(total, flat, devices, bucket, options)
    out = []
    for device in devices:
        with tf.device(device):
            out.append(tf.identity(total))
    return out, sends


def _across(
    total: tf.Tensor, flat: list[tf.Tensor], devices: Sequence[str], bucket: Bucket, options: SpmdOptions
) -> tuple[tf.Tensor, list[tf.Operation]]:
    """This worker's ``total`` (on ``devices[0]``) all-reduced across workers by the
    bucket's pairwise program, through the bucket's wire; and the send ops."""
    _, upper = levels(bucket.spec.alg)
    wire = options.wire if bucket.spec.compression is None else wire_for(bucket.spec.compression)
    wire = wire.for_dtype(total.dtype)
    prog = program(
        upper,
        options.num_workers,
        options.rank,
        bucket.length,
        total.dtype.size,
        bucket.spec.shards,
        bucket.index,
    )
    scale = _agreed_scale(flat, devices, wire, options)
    if scale is not None:
        with tf.device(devices[0]):
            total = total * scale
    first = _slots.reserve(options.channel, prog.slots)
    total, sends = run_program(total, devices[0], prog, first, options, wire)
    if scale is not None:
        with tf.device(devices[0]):
            total = total * tf.math.reciprocal(scale)  # a power of two: exact
    return total, sends


def _agreed_scale(
    flat: list[tf.Tensor], devices: Sequence[str], wire: Wire, options: SpmdOptions
) -> tf.Tensor | None:
    """The power of two every worker scales the bucket by before it crosses a float16
    wire, or ``None`` where the wire's range needs none.

    It is :class:`~allreduce.graph.compression.CastWire`'s scale (from the largest finite
    magnitude of the bucket on any device of any worker, for ``num_workers * len(devices)``
    inputs), agreed with one ``CollectiveReduceV2`` of one scalar (``Max``, one member per
    worker) before the exchange: every worker gets the same maximum, so the same scale.
    """
    fmt = FLOAT_FORMATS.get(flat[0].dtype.name)
    if not isinstance(wire, CastWire) or fmt is None or not needs_scaling(wire.format, fmt):
        return None
    with tf.name_scope(SCALE_SCOPE):
        mine = largest_finite(flat, devices)
        top = collective([mine], devices[:1], _slots.reserve(options.channel, 1), options, merge_op="Max")[0]
        with tf.device(devices[0]):
            return scale_for(top, options.num_workers * len(devices), wire.format, fmt)


def _flatten(members: Sequence[tf.Tensor], device: str) -> tf.Tensor:
    with tf.device(device):
        flat = [m if m.shape.rank == 1 else tf.reshape(m, [-1]) for m in members]
    return flat[0] if len(flat) == 1 else concat_1d(flat, device)


def _unflatten(value: tf.Tensor, shapes: Sequence[tf.TensorShape], device: str) -> list[tf.Tensor]:
    pieces = [value] if len(shapes) == 1 else split_1d(value, device, [s.num_elements() for s in shapes])
    with tf.device(device):
        return [p if s.rank == 1 else tf.reshape(p, s.as_list()) for p, s in zip(pieces, shapes)]


def emit_worker_batch(
    towers: Sequence[Sequence[tf.Tensor]],
    devices: Sequence[str],
    buckets: Sequence[Bucket],
    options: SpmdOptions,
) -> list[list[tf.Tensor]]:
    """This worker's part of a batch all-reduce: ``towers[d][i]`` is tensor ``i`` on
    local device ``devices[d]``; returns ``result[d][i]`` on ``devices[d]``, each made
    to wait for this worker's sends (so that a graph never drops or outruns them)."""
    count = options.num_workers * len(devices)
    out: list[list[tf.Tensor | None]] = [[None] * len(tower) for tower in towers]
    for bucket in buckets:
        columns = [[tower[i] for i in bucket.members] for tower in towers]
        shapes = [t.shape for t in columns[0]]
        flat = [_flatten(c, d) for c, d in zip(columns, devices)]
        if bucket.length == 0:
            reduced, sends = flat, []
        else:
            reduced, sends = _reduce_flat(flat, devices, bucket, options)
        for d, (value, device) in enumerate(zip(reduced, devices)):
            with tf.device(device), tf.control_dependencies(sends):
                if options.reduction == "mean" and bucket.length:
                    value = tf.math.truediv(value, tf.constant(count, dtype=value.dtype))
                else:
                    value = tf.identity(value)
            for i, piece in zip(bucket.members, _unflatten(value, shapes, device)):
                out[d][i] = piece
    return out  # type: ignore[return-value]
