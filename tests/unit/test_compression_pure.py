"""The pure side of compression: the ``@wire`` spec grammar, each algorithm's declared
rounding path, :func:`allreduce.error_bound` and the float16 scale (no TensorFlow ops).

Whether the declared paths match what the builders emit is checked on their graphs in
``tests/unit/test_compression_paths.py``; whether the bound holds, and is tight, on
their results in ``tests/properties/test_compression_properties.py``.
"""

from __future__ import annotations

import itertools
import math
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

import allreduce
from allreduce.planning.accuracy import ErrorBound, _flat_path, _upper_path, error_bound, gamma, rounding_path
from allreduce.planning.registry import AlgorithmInfo, Roundings, algorithm_names, get_algorithm
from allreduce.planning.spec import AllReduceSpecTuple as T
from allreduce.planning.spec import format_all_reduce_spec, parse_all_reduce_spec
from allreduce.planning.wire_formats import FLOAT_FORMATS, WIRE_FORMATS, needs_scaling, scale_exponent

U_BF16, U_FP16, U_F32 = 2.0**-8, 2.0**-11, 2.0**-24


def is_rounded_up(value: float, exact: Fraction) -> bool:
    """Whether ``value`` is the smallest float at least ``exact`` (a bound never rounds down)."""
    return Fraction(value) >= exact > Fraction(math.nextafter(value, -math.inf))


# -- the spec grammar -------------------------------------------------------------------------


def test_a_range_names_its_compression_after_at() -> None:
    assert parse_all_reduce_spec("pscpu:64k:xring#2@bf16") == [
        T("pscpu", 1, 65536),
        T("xring", 2, -1, "bf16"),
    ]
    assert parse_all_reduce_spec("rechd@none")[0].compression == "none"
    assert parse_all_reduce_spec("pscpu/xring#2@fp16") == [T("pscpu/xring", 2, -1, "fp16")]
    assert format_all_reduce_spec([("rechd", 1, 8, "fp16"), ("xring", 3, -1)]) == "rechd@fp16:8:xring#3"


def test_three_field_tuples_and_their_repr_are_unchanged() -> None:
    assert T("xring", 1, -1) == ("xring", 1, -1, None)
    assert repr(T("xring", 2, -1)) == "AllReduceSpecTuple(alg='xring', shards=2, limit=-1)"
    assert repr(T("xring", 2, -1, "bf16")) == (
        "AllReduceSpecTuple(alg='xring', shards=2, limit=-1, compression='bf16')"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("xring@", "all_reduce_spec 'xring@' contains unknown compression '' in 'xring@'"),
        ("xring@int8", "unknown compression 'int8' in 'xring@int8'; known: none, bf16, fp16"),
        ("xring@bf16#2", "unknown compression 'bf16#2' in 'xring@bf16#2'"),
        ("xring@bf16@fp16", "unknown compression 'bf16@fp16'"),
        ("@bf16", "all_reduce_spec '@bf16' contains invalid algorithm ''"),
        ("rechd#2@bf16", "algorithm 'rechd' takes no shard count ('rechd#2')"),
    ],
)
def test_a_malformed_compression_is_a_value_error_naming_it(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_all_reduce_spec(spec)


def test_spec_tuples_check_their_compression() -> None:
    with pytest.raises(ValueError, match=re.escape("must be one of ['none', 'bf16', 'fp16'], got 'int8'")):
        format_all_reduce_spec([("xring", 1, -1, "int8")])
    with pytest.raises(TypeError, match=r"the compression of spec tuple .* must be a str"):
        format_all_reduce_spec([("xring", 1, -1, 16)])
    with pytest.raises(TypeError, match=re.escape("a spec tuple must be (alg, shards, limit), got")):
        format_all_reduce_spec([("xring", 1, -1, "bf16", "extra")])


# -- declared rounding paths ------------------------------------------------------------------


def test_every_reducing_algorithm_declares_its_rounding_path() -> None:
    for name in algorithm_names():
        info = get_algorithm(name)
        if not info.reduces:
            continue
        assert info.roundings is not None, name
        assert (info.reducer is None) == (info.reducer_roundings is None), name
        for n in range(2, 9):
            path = info.roundings(n, 1)
            assert 0 <= path.wire <= n and 1 <= path.adds <= n - 1, (name, n, path)


@pytest.mark.parametrize(
    ("alg", "n", "shards", "expected"),
    [
        # Ring: a chunk's first piece is received and added at each of n - 1 steps, then published.
        ("xring", 2, 1, (2, 1)),
        ("xring", 8, 3, (8, 7)),
        # Halving-doubling: a fold (when n is no power of two), log2(core) halvings, the publish.
        ("rechd", 4, 1, (3, 2)),
        ("rechd", 5, 1, (4, 3)),
        ("rechd", 8, 1, (4, 3)),
        # Shuffle and the plain sums: received where summed, one add_n, the publish.
        ("pscpu", 7, 2, (2, 6)),
        ("simple", 3, 1, (2, 2)),
        ("better", 8, 1, (2, 7)),
        # Torus r x c: the row's reduce-scatter, the column's ring, the publish.
        ("torus", 8, 1, (5, 4)),
        ("torus", 8, 4, (5, 4)),
        ("torus", 6, 3, (4, 3)),
        ("torus", 7, 1, (7, 6)),
        # Summed inside a kernel: no wire.
        ("collective", 4, 1, (0, 3)),
        ("nccl", 8, 1, (0, 7)),
        # One input: nothing moves.
        ("xring", 1, 1, (0, 0)),
    ],
)
def test_flat_rounding_paths(alg: str, n: int, shards: int, expected: tuple[int, int]) -> None:
    assert rounding_path(alg, n, shards) == Roundings(*expected)


@pytest.mark.parametrize(
    ("alg", "groups", "expected"),
    [
        # pscpu's reducer (1 wire, g - 1 adds) in each worker, xring across 2 workers (2, 1);
        # the broadcast re-encodes a wire value: exact.
        ("pscpu/xring", [[0, 1, 2, 3], [4, 5, 6, 7]], (3, 4)),
        # xring has no reducer: a whole ring in each worker (4, 3), then (2, 1).
        ("xring/xring", [[0, 1, 2, 3], [4, 5, 6, 7]], (6, 4)),
        # One worker: the reducer's sum is rounded once more by the broadcast.
        ("simple/xring", [[0, 1, 2]], (2, 2)),
        # One worker whose level is an all-reduce: its result is already a wire value.
        ("xring/simple", [[0, 1, 2]], (3, 2)),
        # A kernel across workers leaves a value the broadcast must round.
        ("pscpu/collective", [[0, 1], [2, 3], [4]], (2, 3)),
        # The largest worker counts.
        ("simple/pscpu", [[0], [1, 2, 3, 4], [5, 6]], (3, 5)),
    ],
)
def test_hierarchical_paths_add_their_levels(alg: str, groups: list, expected: tuple[int, int]) -> None:
    n = sum(len(g) for g in groups)
    assert rounding_path(alg, n, 1, groups) == Roundings(*expected)


@st.composite
def groupings(draw: st.DrawFn) -> tuple[int, list[list[int]]]:
    n = draw(st.integers(1, 12))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=n - 1))) if n > 1 else []
    bounds = [0, *cuts, n]
    return n, [list(range(a, b)) for a, b in itertools.pairwise(bounds) if b > a]


COMPOSABLE = [n for n in algorithm_names() if get_algorithm(n).composable]


@given(st.sampled_from(COMPOSABLE), st.sampled_from(COMPOSABLE), groupings())
def test_the_worst_grouping_bounds_every_grouping(lower: str, upper: str, grouping: tuple) -> None:
    n, groups = grouping
    alg = f"{lower}/{upper}"
    worst = rounding_path(alg, n)
    try:
        mine = rounding_path(alg, n, 1, groups)
    except ValueError:  # e.g. a torus across a worker count it cannot take
        return
    assert mine.wire <= worst.wire and mine.adds <= worst.adds


def test_an_upper_level_that_cannot_run_on_a_worker_count_is_left_out_of_the_worst_case() -> None:
    # torus#4 runs across 4 workers of the 7 devices, not across 2, 3, 5, 6 or 7: the worst
    # is simple's reducer over up to 4 devices (1, 3) then torus 4 x 1 (4, 3); one worker
    # of 7 gives (1, 6) and the broadcast's rounding.
    assert rounding_path("simple/torus", 7, 4) == Roundings(5, 6)


# -- error_bound ------------------------------------------------------------------------------


def test_the_bound_is_higham_for_wire_and_float_roundings() -> None:
    bound = error_bound("xring", 4, "bf16")
    assert (bound.wire, bound.adds) == (4, 3)
    g_w = 4 * Fraction(U_BF16) / (1 - 4 * Fraction(U_BF16))
    g_a = 3 * Fraction(U_F32) / (1 - 3 * Fraction(U_F32))
    assert is_rounded_up(bound.relative, (1 + g_w) * (1 + g_a) - 1)
    assert is_rounded_up(gamma(4, U_BF16), g_w)
    assert bound.per_max == 0  # bfloat16 has float32's range: nothing is scaled
    assert 0 < bound.absolute < 1e-38
    assert bound.limit(10.0) == bound.relative * 10 + bound.absolute


def test_without_compression_only_the_additions_round() -> None:
    bound = error_bound("xring#2", 8)
    assert (bound.wire, bound.adds) == (0, 7)
    assert is_rounded_up(bound.relative, 7 * Fraction(U_F32) / (1 - 7 * Fraction(U_F32)))
    assert bound.per_max == bound.absolute == 0


def test_bounds_of_float64_sums_do_not_cancel_to_less_than_the_exact_bound() -> None:
    # (1 + 2u)(1 + u) - 1 evaluated in floats loses u: the bound is computed exactly.
    u = Fraction(2.0**-53)
    mean = error_bound("collective", 3, dtype="float64", reduction="mean")
    g = 2 * u / (1 - 2 * u)
    assert is_rounded_up(mean.relative, (g + u + g * u) / 3)


def test_float16_bounds_carry_the_underflow_of_the_scaled_values() -> None:
    bound = error_bound("rechd", 8, "fp16")
    g_w = 4 * Fraction(U_FP16) / (1 - 4 * Fraction(U_FP16))
    g_a = 3 * Fraction(U_F32) / (1 - 3 * Fraction(U_F32))
    relative = (1 + g_w) * (1 + g_a) - 1
    assert is_rounded_up(bound.relative, relative)
    # Below float16's subnormals every rounding of the 8 inputs, 7 partial sums and the
    # result may lose 2**-25 (and each x * s 2**-150 in float32), times
    # 1/s <= 2**(3 + 1 - 15) max|x|.
    lost = (15 * Fraction(2) ** -25 + 8 * Fraction(2) ** -150) * (1 + relative)
    assert is_rounded_up(bound.per_max, lost * Fraction(2) ** -11)
    assert is_rounded_up(bound.absolute, lost * Fraction(2) ** (3 - 127) + Fraction(2) ** -150)


def test_values_wider_than_the_wire_are_scaled_where_its_range_is_narrower() -> None:
    assert error_bound("xring", 4, "bf16", dtype="float64").per_max > 0
    assert needs_scaling(WIRE_FORMATS["bf16"], FLOAT_FORMATS["float64"])
    assert not needs_scaling(WIRE_FORMATS["bf16"], FLOAT_FORMATS["float32"])


@pytest.mark.parametrize(
    ("dtype", "compression"), [("bfloat16", "bf16"), ("float16", "fp16"), ("bfloat16", "fp16")]
)
def test_values_as_narrow_as_the_wire_are_not_compressed(dtype: str, compression: str) -> None:
    bound = error_bound("xring", 4, compression, dtype=dtype)
    assert bound.wire == 0 and bound.relative == pytest.approx(gamma(3, FLOAT_FORMATS[dtype].unit_roundoff))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integers_are_exact(dtype: str) -> None:
    assert error_bound("xring", 8, "fp16", dtype=dtype) == ErrorBound(0.0, 0.0, 0.0, 0, 0)


def test_a_mean_divides_the_bound_and_rounds_once_more() -> None:
    total = error_bound("pscpu", 4, "bf16")
    mean = error_bound("pscpu", 4, "bf16", reduction="mean")
    assert mean.adds == total.adds + 1 and mean.wire == total.wire
    g_w = 2 * Fraction(U_BF16) / (1 - 2 * Fraction(U_BF16))
    g_a = 3 * Fraction(U_F32) / (1 - 3 * Fraction(U_F32))
    assert is_rounded_up(mean.relative, ((1 + g_w) * (1 + g_a) * (1 + Fraction(U_F32)) - 1) / 4)


def test_the_bound_of_a_spec_is_its_worst_range_each_with_its_own_wire() -> None:
    bound = error_bound("simple:1k:xring@fp16:1M:pscpu@none", 8, "bf16")
    # simple with bf16 (2 roundings) is worse than xring with fp16 (8 of a smaller u).
    assert bound.relative == error_bound("simple", 8, "bf16").relative
    assert bound.per_max == error_bound("xring", 8, "fp16").per_max
    assert bound.wire == 8
    tuples = [T("pscpu", 1, 10, "none"), T("rechd", 1, -1)]
    assert error_bound(tuples, 4, "none") == error_bound("pscpu", 4)


def test_a_wire_object_counts_by_its_name_and_a_dtype_by_its_name() -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    assert error_bound("xring", 3, Named("fp16"), dtype=Named("float64")) == error_bound(
        "xring", 3, "fp16", dtype="float64"
    )


def test_one_device_is_exact_and_worker_groups_are_used() -> None:
    assert error_bound("xring", 1, "bf16").relative == 0
    split = error_bound("pscpu/xring", 8, "bf16", worker_groups=[[0, 1, 2, 3], [4, 5, 6, 7]])
    assert split.wire == 3 and split.relative < error_bound("pscpu/xring", 8, "bf16").relative


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(spec="trivial", n=2), ValueError, "algorithm 'trivial' does not reduce"),
        (dict(spec="xring", n=0), ValueError, "n must be at least 1, got 0"),
        (dict(spec="xring", n=2, compression="int8"), ValueError, "compression must be one of"),
        (dict(spec="xring", n=2, compression=16), TypeError, "compression must be a str or have a name"),
        (dict(spec="xring", n=2, dtype="complex64"), ValueError, "dtype must be one of"),
        (dict(spec="xring", n=2, reduction="max"), ValueError, "reduction must be one of"),
        (dict(spec="xring", n=2, worker_groups=[[0]]), ValueError, "worker_groups must split"),
        (dict(spec="xring@int8", n=2), ValueError, "unknown compression 'int8'"),
        (dict(spec=3, n=2), TypeError, "spec must be a str"),
        (dict(spec="xring", n=300, compression="bf16"), ValueError, "300 roundings of unit roundoff"),
    ],
)
def test_error_bound_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        error_bound(**kwargs)


def test_an_algorithm_without_a_declared_path_has_no_bound() -> None:
    info = AlgorithmInfo("undeclared", "no path", None, frozenset({"CPU"}))
    with pytest.raises(ValueError, match="'undeclared' declares no rounding path"):
        _flat_path(info, 4, 1)
    with pytest.raises(ValueError, match="'undeclared' declares no rounding path"):
        _upper_path(info, 3, 1)


def test_error_bound_is_public_and_needs_no_tensorflow() -> None:
    assert allreduce.error_bound is error_bound
    assert allreduce.error_bound.__module__ == "allreduce.planning.accuracy"


# -- the float16 scale ------------------------------------------------------------------------

FP16, F32, F64 = WIRE_FORMATS["fp16"], FLOAT_FORMATS["float32"], FLOAT_FORMATS["float64"]


def _biased_exponent(value: float, bias: int) -> int:
    """The biased exponent field of a positive finite ``value`` (0 for subnormals)."""
    mantissa, exponent = Fraction(value), 0
    if value == 0:
        return 0
    while mantissa >= 2:
        mantissa /= 2
        exponent += 1
    while mantissa < 1:
        mantissa *= 2
        exponent -= 1
    return max(exponent + bias, 0)


@given(st.floats(0, 3.3999999521443642e38, allow_subnormal=True, width=32), st.integers(1, 64))
def test_the_scale_keeps_every_partial_sum_inside_float16_and_wastes_at_most_two_bits(
    largest: float, n: int
) -> None:
    k = scale_exponent(_biased_exponent(largest, F32.bias), n, FP16, F32)
    assert 1 - F32.bias <= k <= F32.bias
    assert n * Fraction(largest) * Fraction(2) ** k <= 2**FP16.bias
    if largest and k < F32.bias:
        assert n * Fraction(largest) * Fraction(2) ** (k + 2) > 2**FP16.bias


@pytest.mark.parametrize("largest", [1e-300, 1.0, 3.0, 1e300, 1.7e308])
def test_the_scale_of_float64_values(largest: float) -> None:
    k = scale_exponent(_biased_exponent(largest, F64.bias), 8, FP16, F64)
    assert (
        8 * Fraction(largest) * Fraction(2) ** k
        <= 2**FP16.bias
        < 8 * Fraction(largest) * Fraction(2) ** (k + 2)
    )
