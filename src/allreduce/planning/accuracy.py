"""How far a compressed all-reduce may be from the exact sum (pure Python).

A value that crosses a compressing hop is rounded to the wire type (relative error at
most ``u_w``: ``2**-8`` for bfloat16, ``2**-11`` for float16) and every addition rounds
to the values' own dtype (``u``: ``2**-24`` for float32). Each input reaches the result
through a tree of such roundings, so (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., 4.2) every output ``S_hat`` of a sum ``S = sum x_i`` satisfies::

    |S_hat - S| <= ((1 + gamma(h_w, u_w)) * (1 + gamma(h_a, u)) - 1) * sum |x_i|  (+ underflow)

with ``gamma(h, u) = h u / (1 - h u)``, ``h_w`` the roundings to the wire type and
``h_a`` the additions on the longest path from an input to the result. Each algorithm
declares both in the registry (:attr:`allreduce.planning.registry.AlgorithmInfo.roundings`); a
hierarchical ``A/B`` adds its levels: ``A``'s reducer within the largest worker,
``B``'s all-reduce across the workers, and one more rounding for the broadcast unless
``B``'s result is already a wire value. Every hop is counted as compressed, so the
bound holds for any placement (hops between CPUs of one process are not compressed by
default, which only removes roundings).

float16 values are scaled by a power of two ``s`` before the all-reduce (see
:mod:`allreduce.graph.compression`), which is exact; what float16 cannot hold below its
smallest subnormal ``2**-24`` (in scaled units) is lost: at most ``2**-25 / s`` per
rounding whatever the value's size, with ``1 / s <= 2**(c - 14) * max|x|``
(``c = ceil(log2 n)``, ``max|x|`` over the whole bucket on every device). Such losses
add up over all the roundings of an element, at most ``2n - 1`` (each input and each
partial sum is rounded at most once, the result once more).
:attr:`ErrorBound.per_max` carries that term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, NamedTuple

from allreduce.core.validation import check_choice, check_int, check_worker_groups
from allreduce.planning.registry import AlgorithmInfo, Roundings, get_algorithm
from allreduce.planning.spec import AllReduceSpecTuple, check_spec
from allreduce.planning.wire_formats import (
    COMPRESSIONS,
    FLOAT_FORMATS,
    WIRE_FORMATS,
    FloatFormat,
    needs_scaling,
)

__layer__ = "model"

__all__ = ["ErrorBound", "error_bound", "gamma", "rounding_path"]

_NONE = Roundings(0, 0)


class ErrorBound(NamedTuple):
    """The bound of one all-reduce: ``|result - exact| <= relative * sum|x_i| + per_max *
    max|x| + absolute``, elementwise, with ``sum|x_i|`` over the inputs of the element and
    ``max|x|`` over the whole bucket (for a mean, divided by the device count already).

    Attributes:
        relative: the factor of ``sum|x_i|``.
        per_max: the factor of the bucket's ``max|x|`` (float16's underflow; else 0).
        absolute: a constant (subnormal steps; negligible outside the subnormal range).
        wire: ``h_w``, roundings to the wire type on the longest path.
        adds: ``h_a``, roundings of additions (and of a mean's division) on it.
    """

    relative: float
    per_max: float
    absolute: float
    wire: int
    adds: int

    def limit(self, sum_abs: Any, max_abs: Any = 0.0) -> Any:
        """The bound for ``sum|x_i|`` (a number or an array) and the bucket's ``max|x|``."""
        return self.relative * sum_abs + self.per_max * max_abs + self.absolute


def _up(value: Fraction) -> float:
    """The smallest float at least ``value``: a bound rounded up, never down."""
    near = float(value)
    return near if Fraction(near) >= value else math.nextafter(near, math.inf)


def _gamma(h: int, u: float) -> Fraction:
    if h * Fraction(u) >= 1:
        raise ValueError(f"{h} roundings of unit roundoff {u} have no bound (h * u >= 1)")
    return h * Fraction(u) / (1 - h * Fraction(u))


def gamma(h: int, u: float) -> float:
    """Higham's ``gamma_h = h u / (1 - h u)``: the relative error of ``h`` roundings
    (rounded up to a float).

    Raises:
        ValueError: ``h u >= 1`` (no bound).
    """
    return _up(_gamma(h, u))


def _flat_path(info: AlgorithmInfo, n: int, shards: int, *, reducer: bool = False) -> Roundings:
    if n == 1:
        return _NONE
    rule = info.reducer_roundings if reducer and info.reducer else info.roundings
    if rule is None:
        raise ValueError(f"algorithm {info.name!r} declares no rounding path: its error has no bound")
    return rule(n, shards)


def _upper_path(info: AlgorithmInfo, workers: int, shards: int) -> Roundings | None:
    """The upper level over ``workers`` sums, or ``None`` where it cannot run.

    Raises:
        ValueError: ``info`` declares no rounding path.
    """
    if info.roundings is None:
        return _flat_path(info, workers, shards)
    try:
        return _flat_path(info, workers, shards)
    except ValueError:
        return None  # e.g. torus#r over a count r does not divide


def _levels_path(lower: AlgorithmInfo, upper: AlgorithmInfo, sizes: Sequence[int], shards: int) -> Roundings:
    """``lower`` within groups of ``sizes``, ``upper`` across them, the broadcast."""
    paths = [_flat_path(lower, g, 1, reducer=True) for g in sizes]
    wire, adds = max(p.wire for p in paths), max(p.adds for p in paths)
    if len(sizes) > 1:
        across = _flat_path(upper, len(sizes), shards)
        on_wire = across.wire > 0
    else:
        across, on_wire = _NONE, lower.reducer is None and wire > 0
    return Roundings(wire + across.wire + (not on_wire), adds + across.adds)


def rounding_path(
    alg: str, n: int, shards: int = 1, worker_groups: Sequence[Sequence[int]] | None = None
) -> Roundings:
    """The roundings on the longest path of ``alg#shards`` over ``n`` inputs.

    For a hierarchical ``A/B`` without ``worker_groups``, the worst over every way of
    grouping ``n`` inputs into workers.

    Raises:
        ValueError: an unknown algorithm, one that does not reduce or declares no path.
    """
    info = get_algorithm(alg)
    if not info.reduces:
        raise ValueError(f"algorithm {alg!r} does not reduce: its results are not sums")
    if n == 1:
        return _NONE
    if not info.is_hierarchical:
        return _flat_path(info, n, shards)
    lower, upper = (get_algorithm(name) for name in info.levels)
    if worker_groups is not None:
        return _levels_path(lower, upper, [len(g) for g in worker_groups], shards)
    # The largest of w groups holds at most n - w + 1 inputs; paths need not grow with n.
    worst_lower = [_NONE]
    for g in range(1, n + 1):
        here = _flat_path(lower, g, 1, reducer=True)
        worst_lower.append(
            Roundings(max(here.wire, worst_lower[-1].wire), max(here.adds, worst_lower[-1].adds))
        )
    wire = adds = 0
    for workers in range(1, n + 1):
        down = worst_lower[n - workers + 1]
        across = _upper_path(upper, workers, shards) if workers > 1 else _NONE
        if across is None:
            continue
        on_wire = across.wire > 0 if workers > 1 else lower.reducer is None and down.wire > 0
        wire = max(wire, down.wire + across.wire + (not on_wire))
        adds = max(adds, down.adds + across.adds)
    return Roundings(wire, adds)


def _half_tiny(fmt: FloatFormat) -> Fraction:
    """The most a rounding into ``fmt``'s subnormal range errs by."""
    return Fraction(fmt.tiny) / 2


def _range_bound(path: Roundings, n: int, wire: FloatFormat | None, fmt: FloatFormat) -> ErrorBound:
    """The bound of a sum over ``n`` inputs along ``path``, ``wire`` ``None`` for no
    compression, in exact fractions (``(1 + a)(1 + b) - 1`` cancels in floats)."""
    h_w = path.wire if wire is not None else 0
    g_w = _gamma(h_w, wire.unit_roundoff) if wire is not None else Fraction(0)
    g_a = _gamma(path.adds, fmt.unit_roundoff)
    relative = g_w + g_a + g_w * g_a
    zero = Fraction(0)
    if wire is None or h_w == 0:
        return ErrorBound(relative, zero, zero, h_w, path.adds)  # type: ignore[arg-type]
    # Below the subnormals a rounding errs by up to half the smallest value whatever the
    # magnitude, so these errors add up over every rounding, not along one path: each of
    # the n inputs and n - 1 partial sums is rounded to the wire at most once before it
    # is added (re-encoding a decoded value is exact), the result once more.
    roundings = 2 * n - 1
    if not needs_scaling(wire, fmt):
        absolute = roundings * _half_tiny(wire) * (1 + relative)
        return ErrorBound(relative, zero, absolute, h_w, path.adds)  # type: ignore[arg-type]
    # In scaled units, and for x * s the dtype's subnormals too; times
    # 1/s <= 2**(c + 1 - wire.bias) max|x| + 2**(c - fmt.bias). The unscaling may round
    # into the dtype's subnormals once more.
    c = (n - 1).bit_length()
    lost = (roundings * _half_tiny(wire) + n * _half_tiny(fmt)) * (1 + relative)
    per_max = lost * Fraction(2) ** (c + 1 - wire.bias)
    absolute = lost * Fraction(2) ** (c - fmt.bias) + _half_tiny(fmt)
    return ErrorBound(relative, per_max, absolute, h_w, path.adds)  # type: ignore[arg-type]


def _mean(bound: ErrorBound, n: int, fmt: FloatFormat) -> ErrorBound:
    """The bound after dividing by ``n`` (one more rounding, which may underflow)."""
    u = Fraction(fmt.unit_roundoff)
    return ErrorBound(
        (bound.relative + u + bound.relative * u) / n,
        bound.per_max * (1 + u) / n,
        bound.absolute * (1 + u) / n + _half_tiny(fmt),
        bound.wire,
        bound.adds + 1,
    )


def _name(value: Any, what: str) -> str:
    """The name of a dtype or wire given as a string or an object with a ``name``."""
    name = value if isinstance(value, str) else getattr(value, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str or have a name, got {type(value).__name__}: {value!r}")
    return name


def error_bound(
    spec: str | Sequence[AllReduceSpecTuple],
    n: int,
    compression: Any = "none",
    *,
    dtype: Any = "float32",
    worker_groups: Sequence[Sequence[int]] | None = None,
    reduction: str = "sum",
) -> ErrorBound:
    """The bound on how far each output of an all-reduce with ``spec`` over ``n`` inputs
    may be from the exact sum (or mean): the largest over the spec's ranges.

    Args:
        spec: a spec string or spec tuples; a range's own ``@wire`` wins over ``compression``.
        n: the number of inputs (devices).
        compression: ``"none"``, ``"bf16"`` or ``"fp16"`` (or a wire: its name counts).
        dtype: the values' dtype, by name or as a ``tf.DType``; integers are exact.
        worker_groups: the input indices of each worker, for hierarchical specs;
            ``None``: the worst grouping.
        reduction: ``"sum"`` or ``"mean"``.

    Returns:
        An :class:`ErrorBound`; ``ErrorBound.limit(sum|x_i|, max|x|)`` is the bound.

    Raises:
        TypeError, ValueError: a malformed argument, an unknown name, an algorithm that
            does not reduce or declares no rounding path, or too many roundings for a
            bound (``h u >= 1``).
    """
    ranges = check_spec(spec)
    check_int("n", n, minimum=1)
    default = check_choice("compression", _name(compression, "compression"), COMPRESSIONS)
    dtype_name = _name(dtype, "dtype")
    check_choice("reduction", reduction, ("sum", "mean"))
    groups = check_worker_groups(worker_groups, n)
    fmt = FLOAT_FORMATS.get(dtype_name)
    if fmt is None:
        check_choice("dtype", dtype_name, ("int32", "int64", *FLOAT_FORMATS))
        return ErrorBound(0.0, 0.0, 0.0, 0, 0)
    worst = ErrorBound(0.0, 0.0, 0.0, 0, 0)
    for item in ranges:
        wire = WIRE_FORMATS.get(item.compression or default)
        if wire is not None and wire.itemsize >= fmt.itemsize:
            wire = None  # values already as narrow cross as they are
        exact = _range_bound(rounding_path(item.alg, n, item.shards, groups), n, wire, fmt)
        if reduction == "mean":
            exact = _mean(exact, n, fmt)
        bound = ErrorBound(
            _up(exact.relative), _up(exact.per_max), _up(exact.absolute), exact.wire, exact.adds
        )
        worst = ErrorBound(*(max(a, b) for a, b in zip(worst, bound)))
    return worst
