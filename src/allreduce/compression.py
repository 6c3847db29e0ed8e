"""Wire compression: floating values cross devices as bfloat16 or float16.

A choice is a small :class:`~allreduce.wire.Wire`: ``"none"`` sends values as they are;
``"bf16"`` and ``"fp16"`` cast a floating value wider than the wire type to it where it
leaves a device and back where it is added, so that every addition runs in the value's
own dtype. Integers and values already as narrow pass unchanged. By default only hops
that cost bytes are compressed: between workers, and between devices that do not share
memory (GPUs); CPUs of one process share memory, where a cast would only cost time.
"""

from __future__ import annotations

from allreduce._tf import tf
from allreduce.devices import parse_device_name
from allreduce.validation import check_choice
from allreduce.wire import PLAIN, Wire

__all__ = ["COMPRESSIONS", "CastWire", "wire_for"]

#: The names ``compression=`` accepts.
COMPRESSIONS = ("none", "bf16", "fp16")

_WIRE_DTYPES = {"bf16": tf.bfloat16, "fp16": tf.float16}


def shares_memory(src: str, dst: str) -> bool:
    """Whether ``src`` and ``dst`` are CPUs of one worker (a copy between them is free)."""
    a, b = parse_device_name(src), parse_device_name(dst)
    return a.device_type == b.device_type == "CPU" and a.worker == b.worker


class CastWire(Wire):
    """Casts floating values wider than ``dtype`` to it on the way between devices.

    Args:
        name: ``"bf16"`` or ``"fp16"``.
        everywhere: compress hops between CPUs of one process too (they share memory,
            so this only costs time; useful to measure or test the rounding).
    """

    def __init__(self, name: str, *, everywhere: bool = False) -> None:
        self.name = name
        self.dtype = _WIRE_DTYPES[name]
        self.everywhere = everywhere

    def compresses(self, dtype: tf.DType) -> bool:
        """Whether values of ``dtype`` are compressed (floating and wider than the wire)."""
        return dtype.is_floating and dtype.size > self.dtype.size

    def for_dtype(self, dtype: tf.DType) -> Wire:
        return self if self.compresses(dtype) else PLAIN

    def crosses(self, src: str, dst: str) -> bool:
        return src != dst and (self.everywhere or not shares_memory(src, dst))

    def encode(self, value: tf.Tensor) -> tf.Tensor:
        return tf.cast(value, self.dtype)

    def decode(self, packet: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        return tf.cast(packet, dtype)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CastWire) and (self.name, self.everywhere) == (other.name, other.everywhere)

    def __hash__(self) -> int:
        return hash((CastWire, self.name, self.everywhere))

    def __repr__(self) -> str:
        return f"CastWire({self.name!r}, everywhere={self.everywhere})"


def wire_for(compression: str | Wire) -> Wire:
    """The wire of a ``compression=`` argument: a name of :data:`COMPRESSIONS`, or a wire.

    Raises:
        TypeError: neither a str nor a :class:`~allreduce.wire.Wire`.
        ValueError: an unknown name.
    """
    if isinstance(compression, Wire):
        return compression
    check_choice("compression", compression, COMPRESSIONS)
    return PLAIN if compression == "none" else CastWire(compression)
