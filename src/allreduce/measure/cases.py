"""What the benchmark reduces: size sweeps, tensor lists, and inputs whose sum is known.

Pure Python and numpy. Device ``d`` holds, in tensor ``t`` at flat index ``i``, the
small integer ``(7 * i + 3 * t + d) % 13``; the sum over ``n`` devices is at most
``12 * n``, which every supported dtype represents exactly for the device counts the
benchmark allows (:func:`max_exact_devices`), so every output element can be compared
with the exact expected value, bit for bit.

A run that compresses (``--compression``) needs inputs that a narrow type must round,
or its error is always 0: in float32 and float64 its inputs are random multiples of
``2**-12`` in ``[0, 1)`` drawn with a fixed seed (:func:`rounding_pattern`). They carry
12 significant bits, more than bfloat16 (8) or float16 (11) keep, and their sums over
up to :func:`max_exact_devices` devices are still exact in any order, so an
uncompressed result is still compared bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from allreduce.core.tables import DTYPE_SIZES

__all__ = [
    "Case",
    "expected_sum",
    "format_bytes",
    "input_pattern",
    "many_small_case",
    "max_exact_devices",
    "rounding_applies",
    "rounding_pattern",
    "rounding_sum",
    "shapes_case",
    "sweep_cases",
    "sweep_sizes",
]

#: Bytes per element of the dtypes the benchmark can fill exactly.

# The largest integer up to which every integer is exactly representable.
_EXACT_LIMIT = {
    "float16": 2**11,
    "bfloat16": 2**8,
    "float32": 2**24,
    "float64": 2**53,
    "int32": 2**31 - 1,
    "int64": 2**63 - 1,
}
_MODULUS = 13
#: Significant bits of :func:`rounding_pattern`'s values, and its seed.
ROUNDING_BITS = 12
_ROUNDING_SEED = 20_26_12


@dataclass(frozen=True)
class Case:
    """One thing to all-reduce: the same list of tensor shapes on every device.

    Attributes:
        name: a label for tables and benchmark groups (``"16MiB"``, ``"many-small"``).
        shapes: the shape of each tensor a device holds.
        dtype: a key of :data:`DTYPE_SIZES`.
    """

    name: str
    shapes: tuple[tuple[int, ...], ...]
    dtype: str

    @property
    def count(self) -> int:
        """Elements per device, over all tensors."""
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def nbytes(self) -> int:
        """Bytes per device, over all tensors."""
        return self.count * DTYPE_SIZES[self.dtype]

    @property
    def is_batch(self) -> bool:
        """Whether a device holds more than one tensor."""
        return len(self.shapes) != 1


def format_bytes(size: int) -> str:
    """``1024`` -> ``"1KiB"``, ``16 << 20`` -> ``"16MiB"``, ``1000`` -> ``"1000B"``."""
    for suffix, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{suffix}"
    return f"{size}B"


def sweep_sizes(min_bytes: int, max_bytes: int, factor: int) -> list[int]:
    """Byte sizes ``min_bytes * factor**k`` up to ``max_bytes``, and ``max_bytes`` itself.

    Raises:
        ValueError: a size below 1, ``min_bytes > max_bytes`` or ``factor < 2``.
    """
    if min_bytes < 1 or max_bytes < 1:
        raise ValueError(f"sizes must be positive, got min_bytes={min_bytes}, max_bytes={max_bytes}")
    if min_bytes > max_bytes:
        raise ValueError(f"min_bytes ({min_bytes}) exceeds max_bytes ({max_bytes})")
    if factor < 2:
        raise ValueError(f"factor must be at least 2, got {factor}")
    sizes = []
    size = min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= factor
    if sizes[-1] != max_bytes:
        sizes.append(max_bytes)
    return sizes


def sweep_cases(min_bytes: int, max_bytes: int, factor: int, dtype: str) -> list[Case]:
    """One single-tensor case per size of :func:`sweep_sizes`, rounded down to whole
    elements (sizes below one element are dropped).

    Raises:
        ValueError: as :func:`sweep_sizes`, or an unknown dtype.
    """
    itemsize = _itemsize(dtype)
    cases = []
    for size in sweep_sizes(min_bytes, max_bytes, factor):
        count = size // itemsize
        if count and (not cases or cases[-1].count != count):
            cases.append(Case(format_bytes(count * itemsize), ((count,),), dtype))
    if not cases:
        raise ValueError(f"no size between {min_bytes} and {max_bytes} bytes holds one {dtype} element")
    return cases


def many_small_case(dtype: str, tensors: int = 200, elements: int = 1000) -> Case:
    """``tensors`` vectors of ``elements`` elements per device (many small gradients).

    Raises:
        ValueError: a count below 1 or an unknown dtype.
    """
    _itemsize(dtype)
    if tensors < 1 or elements < 1:
        raise ValueError(f"need at least one tensor of one element, got {tensors} x {elements}")
    return Case(f"{tensors}x{elements}", ((elements,),) * tensors, dtype)


def shapes_case(name: str, shapes: Sequence[Sequence[int]], dtype: str) -> Case:
    """A case of the given tensor shapes (e.g. a model's gradients); empty tensors are dropped.

    Raises:
        ValueError: no non-empty shape, or an unknown dtype.
    """
    _itemsize(dtype)
    kept = tuple(tuple(int(d) for d in shape) for shape in shapes if math.prod(shape) > 0)
    if not kept:
        raise ValueError(f"{name}: no tensor with at least one element")
    return Case(name, kept, dtype)


def max_exact_devices(dtype: str, rounding: bool = False) -> int:
    """How many devices' inputs can be summed exactly in ``dtype`` (``rounding``: the
    inputs of a run that compresses, see :func:`rounding_applies`).

    Raises:
        ValueError: an unknown dtype.
    """
    _itemsize(dtype)
    if rounding and rounding_applies(dtype):
        return _EXACT_LIMIT[dtype] >> ROUNDING_BITS
    return _EXACT_LIMIT[dtype] // (_MODULUS - 1)


def rounding_applies(dtype: str) -> bool:
    """Whether a run that compresses fills ``dtype`` with :func:`rounding_pattern`
    (float32 and float64: the types with bits to spare; others keep the integers)."""
    return dtype in ("float32", "float64")


def _rounding_units(count: int, device: int, tensor: int) -> np.ndarray:
    rng = np.random.default_rng((_ROUNDING_SEED, device, tensor))
    return rng.integers(0, 1 << ROUNDING_BITS, count, dtype=np.int32)


def rounding_pattern(count: int, device: int, tensor: int = 0) -> np.ndarray:
    """Device ``device``'s values of tensor ``tensor``, flattened, as ``float64``: random
    multiples of ``2**-ROUNDING_BITS`` in ``[0, 1)``, the same for every call."""
    return np.ldexp(_rounding_units(count, device, tensor).astype(np.float64), -ROUNDING_BITS)


def rounding_sum(count: int, num_devices: int, tensor: int = 0) -> np.ndarray:
    """The exact sum over ``num_devices`` devices of :func:`rounding_pattern`, as ``float64``."""
    total = np.zeros(count, dtype=np.int64)
    for device in range(num_devices):
        total += _rounding_units(count, device, tensor)
    return np.ldexp(total.astype(np.float64), -ROUNDING_BITS)


def input_pattern(count: int, device: int, tensor: int = 0) -> np.ndarray:
    """Device ``device``'s values of tensor ``tensor``, flattened, as ``uint8``."""
    base = ((np.arange(count, dtype=np.int64) % _MODULUS) * 7 % _MODULUS).astype(np.uint8)
    return _rotate(base, device + 3 * tensor)


def expected_sum(count: int, num_devices: int, tensor: int = 0) -> np.ndarray:
    """The exact sum over ``num_devices`` devices of :func:`input_pattern`, as ``int64``."""
    base = ((np.arange(count, dtype=np.int64) % _MODULUS) * 7 % _MODULUS).astype(np.uint8)
    total = np.zeros(count, dtype=np.int64)
    for device in range(num_devices):
        total += _rotate(base, device + 3 * tensor)
    return total


def _rotate(base: np.ndarray, shift: int) -> np.ndarray:
    out = base + np.uint8(shift % _MODULUS)
    out[out >= _MODULUS] -= _MODULUS
    return out


def _itemsize(dtype: str) -> int:
    if dtype not in DTYPE_SIZES:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPE_SIZES)}")
    return DTYPE_SIZES[dtype]
