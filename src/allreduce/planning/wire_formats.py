"""The floating formats values may take on the wire, and the dtypes they compress (pure Python).

:mod:`allreduce.graph.compression` casts with them, :mod:`allreduce.planning.accuracy` bounds what
the casts cost in accuracy and :mod:`allreduce.planning.spec` names them after ``@``; none of
this needs TensorFlow.
"""

from __future__ import annotations

from typing import NamedTuple

from allreduce.core.tables import COMPRESSIONS, DTYPE_SIZES

__layer__ = "model"

__all__ = ["COMPRESSIONS", "FLOAT_FORMATS", "WIRE_FORMATS", "FloatFormat", "needs_scaling", "scale_exponent"]


class FloatFormat(NamedTuple):
    """What rounding to a binary floating format costs.

    Attributes:
        name: the dtype name (``"bfloat16"``).
        itemsize: bytes per value.
        unit_roundoff: ``u``, half the distance from 1 to the next value: a rounding to
            nearest of a value in the normal range errs by at most ``u`` times it.
        tiny: the smallest positive (subnormal) value: a rounding of a value in the
            subnormal range errs by at most half of it.
        bias: the exponent bias (the largest finite value is below ``2 ** (bias + 1)``,
            the smallest normal one is ``2 ** (1 - bias)``).
        mantissa: the stored mantissa bits.
    """

    name: str
    itemsize: int
    unit_roundoff: float
    tiny: float
    bias: int
    mantissa: int


#: Every floating dtype the library reduces, by name.
FLOAT_FORMATS = {
    "bfloat16": FloatFormat("bfloat16", DTYPE_SIZES["bfloat16"], 2.0**-8, 2.0**-133, 127, 7),
    "float16": FloatFormat("float16", DTYPE_SIZES["float16"], 2.0**-11, 2.0**-24, 15, 10),
    "float32": FloatFormat("float32", DTYPE_SIZES["float32"], 2.0**-24, 2.0**-149, 127, 23),
    "float64": FloatFormat("float64", DTYPE_SIZES["float64"], 2.0**-53, 2.0**-1074, 1023, 52),
}

#: The wire format of each compressing name.
WIRE_FORMATS = {"bf16": FLOAT_FORMATS["bfloat16"], "fp16": FLOAT_FORMATS["float16"]}


def needs_scaling(wire: FloatFormat, value: FloatFormat) -> bool:
    """Whether values of format ``value`` are scaled into ``wire``'s range before they cross
    (its exponent range is narrower: float16 for float32, bfloat16 for float64)."""
    return wire.bias < value.bias


def scale_exponent(biased_max_exponent: int, devices: int, wire: FloatFormat, value: FloatFormat) -> int:
    """``k`` of the scale ``2**k`` for a bucket whose largest finite magnitude ``M`` has the
    biased exponent ``biased_max_exponent`` in format ``value``: the largest ``k`` (within
    ``value``'s normal exponents) that the bound ``M < 2**(E - bias + 1)`` guarantees keeps
    ``devices * M * 2**k <= 2**wire.bias``, so that no partial sum nears ``wire``'s largest
    value. The TensorFlow side computes the same formula with tensor ops.
    """
    c = (devices - 1).bit_length()  # ceil(log2(devices))
    e = max(biased_max_exponent, 1)
    return min(max(wire.bias - c - e + value.bias - 1, 1 - value.bias), value.bias)
