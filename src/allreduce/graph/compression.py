"""Wire compression: floating values cross devices as bfloat16 or float16.

A choice is a small :class:`~allreduce.graph.wire.Wire`: ``"none"`` sends values as they are;
``"bf16"`` and ``"fp16"`` cast a floating value wider than the wire type to it where it
leaves a device and back where it is added, so that every addition runs in the value's
own dtype (restore, add, compress for the next hop). Integers and values already as
narrow pass unchanged.

By default only hops that cost bytes are compressed: between workers, and between
devices that do not share memory (GPUs). CPUs of one process share memory, where a
cast would only cost time (see ``docs/compression.md`` for the measurement);
``CastWire(name, everywhere=True)`` compresses those hops too.

Where the wire's exponent range is narrower than the values' (float16 for float32),
each bucket is first scaled by a power of two, exact, chosen from the largest finite
magnitude of the bucket on any device so that no partial sum of ``n`` inputs can
overflow the wire type (:meth:`CastWire.fit`); NaN and Inf are left out of that
maximum and propagate as they would without compression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from allreduce.core._tf import tf
from allreduce.core.validation import check_bool, check_choice
from allreduce.graph.wire import PLAIN, Wire
from allreduce.planning.devices import shares_memory
from allreduce.planning.wire_formats import (
    COMPRESSIONS,
    FLOAT_FORMATS,
    WIRE_FORMATS,
    FloatFormat,
    needs_scaling,
)

__all__ = ["COMPRESSIONS", "CastWire", "largest_finite", "scale_for", "wire_for"]

_WIRE_DTYPES = {"bf16": tf.bfloat16, "fp16": tf.float16}
_BITS = {4: tf.int32, 8: tf.int64}


class CastWire(Wire):
    """Casts floating values wider than ``dtype`` to it on the way between devices.

    Args:
        name: ``"bf16"`` or ``"fp16"``.
        everywhere: compress hops between CPUs of one process too (they share memory,
            so this only costs time; useful to measure or test the rounding).

    Raises:
        TypeError, ValueError: ``name`` is not one of those names, ``everywhere`` not a bool.
    """

    def __init__(self, name: str, *, everywhere: bool = False) -> None:
        check_choice("compression", name, tuple(WIRE_FORMATS))
        check_bool("everywhere", everywhere)
        self.name = name
        self.dtype = _WIRE_DTYPES[name]
        self.format: FloatFormat = WIRE_FORMATS[name]
        self.everywhere = everywhere

    def compresses(self, dtype: tf.DType) -> bool:
        """Whether values of ``dtype`` are compressed (floating and wider than the wire)."""
        return dtype.is_floating and dtype.size > self.dtype.size

    def for_dtype(self, dtype: tf.DType) -> Wire:
        return self if self.compresses(dtype) else PLAIN

    def crosses(self, src: str, dst: str) -> bool:
        return src != dst and (self.everywhere or not shares_memory((src, dst)))

    def encode(self, value: tf.Tensor) -> tf.Tensor:
        return tf.cast(value, self.dtype)

    def decode(self, packet: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        return tf.cast(packet, dtype)

    def fit(
        self, values: Sequence[tf.Tensor], devices: Sequence[str]
    ) -> tuple[list[tf.Tensor], Callable[[Sequence[tf.Tensor]], list[tf.Tensor]]]:
        """Scales the bucket by ``2**k`` into the wire's range where it is narrower than
        the values' and a hop among ``devices`` is compressed (see
        :func:`allreduce.planning.wire_formats.scale_exponent`); the returned function divides
        the results by the same power of two on every device."""
        fmt = FLOAT_FORMATS.get(values[0].dtype.name)
        scaled = fmt is not None and self.compresses(values[0].dtype) and needs_scaling(self.format, fmt)
        if not scaled or not any(self.crosses(a, b) for a in devices for b in devices):
            return super().fit(values, devices)
        scale = _bucket_scale(values, devices, self.format, fmt)  # type: ignore[arg-type]
        out, inverses = [], []
        for value, device in zip(values, devices):
            with tf.device(device):
                mine = tf.identity(scale) if device != devices[0] else scale
                out.append(value * mine)
                inverses.append(tf.math.reciprocal(mine))  # a power of two: exact

        def restore(results: Sequence[tf.Tensor]) -> list[tf.Tensor]:
            out = []
            for result, inverse, device in zip(results, inverses, devices):
                with tf.device(device):
                    out.append(result * inverse)
            return out

        return out, restore

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CastWire) and (self.name, self.everywhere) == (other.name, other.everywhere)

    def __hash__(self) -> int:
        return hash((CastWire, self.name, self.everywhere))

    def __repr__(self) -> str:
        return f"CastWire({self.name!r}, everywhere={self.everywhere})"


#: The name scope of the ops that choose an fp16 bucket's scale (a few scalars on the
#: first device); every other op of a compressed all-reduce moves or adds data.
SCALE_SCOPE = "wire_scale"


def _bucket_scale(
    values: Sequence[tf.Tensor], devices: Sequence[str], wire: FloatFormat, fmt: FloatFormat
) -> tf.Tensor:
    """``2**k`` on ``devices[0]``, from every device's largest finite magnitude (NaN and
    Inf left out), by the formula of :func:`allreduce.planning.wire_formats.scale_exponent`."""
    with tf.name_scope(SCALE_SCOPE):
        top = largest_finite(values, devices)
        with tf.device(devices[0]):
            return scale_for(top, len(devices), wire, fmt)


def largest_finite(values: Sequence[tf.Tensor], devices: Sequence[str]) -> tf.Tensor:
    """The largest finite magnitude of ``values`` (``values[i]`` on ``devices[i]``; NaN and
    Inf left out, 0 if none), a scalar on ``devices[0]``."""
    dtype = values[0].dtype
    largest = []
    for value, device in zip(values, devices):
        with tf.device(device):
            magnitude = tf.abs(value)
            finite = tf.where(magnitude <= dtype.max, magnitude, tf.constant(0, dtype))
            largest.append(tf.reduce_max(finite))
    with tf.device(devices[0]):
        return tf.reduce_max(tf.stack([tf.identity(m) for m in largest]))


def scale_for(top: tf.Tensor, inputs: int, wire: FloatFormat, fmt: FloatFormat) -> tf.Tensor:
    """``2**k`` (in ``top``'s dtype, where ``top`` is) for a bucket of ``inputs`` inputs whose
    largest finite magnitude is ``top``, by the formula of
    :func:`allreduce.planning.wire_formats.scale_exponent`: equal inputs give equal scales."""
    dtype = top.dtype
    bits = _BITS[fmt.itemsize]
    c = (inputs - 1).bit_length()
    exponent = tf.maximum(tf.bitwise.right_shift(tf.bitcast(top, bits), fmt.mantissa), 1)
    k = tf.clip_by_value(wire.bias - c + fmt.bias - 1 - exponent, 1 - fmt.bias, fmt.bias)
    return tf.bitcast(tf.bitwise.left_shift(k + fmt.bias, fmt.mantissa), dtype)


def wire_for(compression: str | Wire) -> Wire:
    """The wire of a ``compression=`` argument: a name of :data:`COMPRESSIONS`, or a wire.

    Raises:
        TypeError: neither a str nor a :class:`~allreduce.graph.wire.Wire`.
        ValueError: an unknown name.
    """
    if isinstance(compression, Wire):
        return compression
    check_choice("compression", compression, COMPRESSIONS)
    return PLAIN if compression == "none" else CastWire(compression)
