"""The one emitter: turns a batch plan (:mod:`allreduce.planning.plan`) into TensorFlow ops.

For each bucket it flattens (and, for a pack, concatenates) the members on each
device, lets the bucket's wire fit the values to its range (a power-of-two scale for
float16, :meth:`allreduce.graph.wire.Wire.fit`), runs the bucket's algorithm, undoes the
fit, divides for a mean, and splits the result back with one op per device. It emits
no op that does nothing: a 1-D tensor is not reshaped, a lone tensor is not
concatenated or split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import BuildContext, concat_1d, constant_on, run_all_reduce, split_1d
from allreduce.graph.compression import wire_for
from allreduce.graph.wire import PLAIN, Wire
from allreduce.planning.plan import Bucket
from allreduce.planning.registry import get_algorithm

__all__ = ["Options", "emit_batch"]


@dataclass(frozen=True)
class Options:
    """How every bucket of a batch is reduced (see :func:`allreduce.batch_all_reduce`)."""

    reduction: str = "sum"
    worker_groups: tuple[tuple[int, ...], ...] | None = None
    timeout_s: float = 0.0
    wire: Wire = PLAIN


def _flatten(members: Sequence[tf.Tensor], device: str) -> tf.Tensor:
    """The members as one 1-D tensor on ``device``."""
    if len(members) == 1 and members[0].shape.rank == 1:
        return members[0]
    with tf.device(device):
        flat = [m if m.shape.rank == 1 else tf.reshape(m, constant_on((-1,), device)) for m in members]
    return flat[0] if len(flat) == 1 else concat_1d(flat, device)


def _unflatten(value: tf.Tensor, shapes: Sequence[tf.TensorShape], device: str) -> list[tf.Tensor]:
    """``value`` cut back into tensors of ``shapes``, on ``device``, with one split."""
    pieces = [value] if len(shapes) == 1 else split_1d(value, device, [s.num_elements() for s in shapes])
    with tf.device(device):
        return [
            p if s.rank == 1 else tf.reshape(p, constant_on(tuple(s.as_list()), device))
            for p, s in zip(pieces, shapes)
        ]


def _reduce_bucket(
    columns: Sequence[Sequence[tf.Tensor]], devices: Sequence[str], bucket: Bucket, options: Options
) -> list[tf.Tensor]:
    """The all-reduced, flat bucket on every device (divided by the count for a mean)."""
    info = get_algorithm(bucket.spec.alg)
    flat = [_flatten(members, d) for members, d in zip(columns, devices)]
    if bucket.length == 0 or len(devices) == 1:
        out = []
        for value, device in zip(flat, devices):
            with tf.device(device):
                out.append(tf.identity(value))
        return out
    # A spec range's own compression (``xring@bf16``) wins over the call's.
    wire = options.wire if bucket.spec.compression is None else wire_for(bucket.spec.compression)
    ctx = BuildContext(
        info=info,
        shards=bucket.spec.shards,
        tensor_index=bucket.index,
        worker_groups=options.worker_groups,
        timeout_s=options.timeout_s,
        wire=wire.for_dtype(flat[0].dtype),
    )
    fitted, restore = ctx.wire.fit(flat, devices)
    summed = restore(run_all_reduce(fitted, devices, ctx))
    if options.reduction != "mean" or not info.reduces:
        return summed
    out = []
    for value, device in zip(summed, devices):
        with tf.device(device):
            out.append(tf.math.truediv(value, tf.constant(len(devices), dtype=value.dtype)))
    return out


def emit_batch(
    towers: Sequence[Sequence[tf.Tensor]], devices: Sequence[str], buckets: Sequence[Bucket], options: Options
) -> list[list[tf.Tensor]]:
    """All-reduces ``towers[d][i]`` (tensor ``i`` on ``devices[d]``) bucket by bucket.

    Returns ``result[d][i]`` shaped like ``towers[d][i]``, on ``devices[d]``.
    """
    out: list[list[tf.Tensor | None]] = [[None] * len(tower) for tower in towers]
    for bucket in buckets:
        columns = [[tower[i] for i in bucket.members] for tower in towers]
        shapes = [t.shape for t in columns[0]]
        reduced = _reduce_bucket(columns, devices, bucket, options)
        for d, (value, device) in enumerate(zip(reduced, devices)):
            for i, piece in zip(bucket.members, _unflatten(value, shapes, device)):
                out[d][i] = piece
    return out  # type: ignore[return-value]
