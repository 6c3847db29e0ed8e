"""The one place where data is transformed on its way between devices.

Builders never send a value to another device directly: a partial sum goes through
:meth:`Wire.receive` where it is added, and a final sum through :meth:`Wire.publish`
(once, where it was computed) and :meth:`Wire.open` (where it is used). This class
sends values as they are and emits no op; a compressing wire
(:mod:`allreduce.graph.compression`) overrides :meth:`crosses`, :meth:`encode` and
:meth:`decode`, and :meth:`fit` where values must be scaled into its range first (the
emitter calls it once per bucket, around the algorithm). Because a final sum is encoded
once and every device, its own included, decodes the same packet, results stay bitwise
identical on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from allreduce.core._tf import tf

__all__ = ["Packet", "Wire"]


class Packet(NamedTuple):
    """A final value on its way to other devices: ``tensor``, on ``device``, in the
    wire's format when ``encoded``, else the value itself; ``dtype`` is the value's own
    dtype."""

    tensor: tf.Tensor
    dtype: tf.DType
    encoded: bool
    device: str


class Wire:
    """Sends values between devices as they are (the default: no compression)."""

    name = "none"

    def for_dtype(self, dtype: tf.DType) -> Wire:
        """The wire for values of ``dtype``: this one, or :data:`PLAIN` where it would
        leave such values unchanged anyway."""
        del dtype
        return self

    def crosses(self, src: str, dst: str) -> bool:
        """Whether a value sent from ``src`` to ``dst`` is transformed on the way."""
        del src, dst
        return False

    def encode(self, value: tf.Tensor) -> tf.Tensor:
        """The wire format of ``value`` (called under the sender's device)."""
        return value

    def decode(self, packet: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """``packet`` back in ``dtype`` (called under the receiver's device)."""
        del dtype
        return packet

    def fit(
        self, values: Sequence[tf.Tensor], devices: Sequence[str]
    ) -> tuple[list[tf.Tensor], Callable[[Sequence[tf.Tensor]], list[tf.Tensor]]]:
        """``values[i]`` (on ``devices[i]``) made ready for this wire, and the function
        that turns the all-reduced results back; here, unchanged both ways."""
        del devices
        return list(values), list

    def receive(self, value: tf.Tensor, src: str, dst: str) -> tf.Tensor:
        """``value``, computed on ``src``, ready to be added on ``dst``."""
        if src == dst or not self.crosses(src, dst):
            return value
        with tf.device(src):
            packet = self.encode(value)
        with tf.device(dst):
            return self.decode(packet, value.dtype)

    def publish(self, value: tf.Tensor, src: str, destinations: Sequence[str]) -> Packet:
        """A final value on ``src``, ready to be copied to ``destinations``: encoded once
        when any of those hops transforms data."""
        if not any(self.crosses(src, d) for d in destinations if d != src):
            return Packet(value, value.dtype, False, src)
        with tf.device(src):
            return Packet(self.encode(value), value.dtype, True, src)

    def open(self, packet: Packet, device: str) -> tf.Tensor:
        """The value a packet carries, on ``device``: decoded there, or copied there
        when the packet sits elsewhere."""
        if packet.encoded:
            with tf.device(device):
                return self.decode(packet.tensor, packet.dtype)
        if packet.device == device:
            return packet.tensor
        with tf.device(device):
            return tf.identity(packet.tensor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


#: The wire of every all-reduce without compression.
PLAIN = Wire()
