"""The spec language: the printed form of limits, and each error message in full."""

from __future__ import annotations

import re

import pytest

from allreduce.planning.spec import (
    AllReduceSpecTuple,
    check_spec,
    format_all_reduce_spec,
    parse_all_reduce_spec,
    parse_general_int,
    select_spec_tuple,
)

T = AllReduceSpecTuple


@pytest.mark.parametrize(
    ("limit", "text"),
    [
        (0, "0"),
        (1, "1"),
        (1023, "1023"),
        (1024, "1k"),
        (1536, "1536"),
        (3072, "3k"),
        (2**20, "1M"),
        (2**20 + 1024, "1025k"),
        (5 * 2**20, "5M"),
        (2**30, "1G"),
        (3 * 2**30, "3G"),
        (2**30 + 2**20, "1025M"),
        (2**40, "1T"),
        (2**50, "1024T"),
        (2**40 + 2**30, "1025G"),
    ],
)
def test_format_writes_the_largest_exact_suffix(limit: int, text: str) -> None:
    spec = format_all_reduce_spec([T("pscpu", 1, limit), T("xring", 1, -1)])
    assert spec == f"pscpu:{text}:xring"
    assert parse_all_reduce_spec(spec)[0].limit == limit


@pytest.mark.parametrize(
    ("tuples", "error", "message"),
    [
        ([], ValueError, "a spec needs at least one (alg, shards, limit) tuple, got none"),
        (
            [("xring", 0, -1)],
            ValueError,
            "shards of spec tuple AllReduceSpecTuple(alg='xring', shards=0, limit=-1) must be at least 1",
        ),
        ([("xring", True, -1)], TypeError, "must be an int, got bool: True"),
        ([("xring", "2", -1)], TypeError, "must be an int, got str: '2'"),
        ([("xring", 2.0, -1)], TypeError, "must be an int, got float: 2.0"),
        ([("rechd", 2, -1)], ValueError, "algorithm 'rechd' takes no shard count"),
        ([("xring", 1, 7)], ValueError, "the last limit must be -1 (no limit)"),
        ([("xring", 1, 50), ("xring", 1, 100)], ValueError, "the last limit must be -1 (no limit)"),
        ([("xring", 1, True), ("xring", 1, -1)], TypeError, "limit of spec tuple"),
        ([("xring", 1, "2k"), ("xring", 1, -1)], TypeError, "must be an int, got str: '2k'"),
        ([("xring", 1, -2), ("xring", 1, -1)], ValueError, "must be at least 0, got -2"),
        ([("xring", 1, 8), ("pscpu", 1, 8), ("xring", 1, -1)], ValueError, "limits must increase"),
        ([("xring", 1, 9), ("pscpu", 1, 8), ("xring", 1, -1)], ValueError, "limits must increase"),
        (["xring"], TypeError, "a spec tuple must be (alg, shards, limit), got 'xring'"),
        # A string of three characters is a sequence of three, and still not a tuple.
        (["abc"], TypeError, "a spec tuple must be (alg, shards, limit), got 'abc'"),
        ([("xring", 1)], TypeError, "a spec tuple must be (alg, shards, limit), got ('xring', 1)"),
    ],
)
def test_format_rejects_invalid_tuples_saying_why(tuples: list, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        format_all_reduce_spec(tuples)


def test_an_empty_spec_says_so_in_these_words() -> None:
    with pytest.raises(ValueError) as raised:
        format_all_reduce_spec([])
    assert str(raised.value) == "a spec needs at least one (alg, shards, limit) tuple, got none"


def test_format_error_names_the_tuple() -> None:
    with pytest.raises(ValueError, match=re.escape("spec tuple AllReduceSpecTuple(alg='rechd', shards=3")):
        format_all_reduce_spec([("rechd", 3, -1)])


def test_format_accepts_a_limit_of_zero_and_single_shards_of_any_algorithm() -> None:
    assert format_all_reduce_spec([("rechd", 1, 0), ("trivial", 1, -1)]) == "rechd:0:trivial"
    assert format_all_reduce_spec(iter([("pscpu/xring", 4, -1)])) == "pscpu/xring#4"


@pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), (3, "int"), (b"xring", "bytes")])
def test_parse_rejects_non_strings_naming_the_type(value: object, kind: str) -> None:
    with pytest.raises(TypeError, match=re.escape(f"all_reduce_spec must be a str, got {kind}")):
        parse_all_reduce_spec(value)  # type: ignore[arg-type]


def test_parse_error_messages_in_full() -> None:
    with pytest.raises(ValueError) as info:
        parse_all_reduce_spec("")
    assert str(info.value) == "all_reduce_spec is empty: expected e.g. 'xring' or 'pscpu:2k:xring'"
    with pytest.raises(ValueError) as info:
        parse_all_reduce_spec("xring:2k:pscpu:4k")
    assert str(info.value) == (
        "all_reduce_spec 'xring:2k:pscpu:4k' is not well formed: 4 ':'-separated parts, "
        "expected alg(:limit:alg)*"
    )


def test_parse_gives_one_tuple_per_range() -> None:
    assert parse_all_reduce_spec("simple:0:better:1:xring#3") == [
        T("simple", 1, 0),
        T("better", 1, 1),
        T("xring", 3, -1),
    ]


@pytest.mark.parametrize(("value", "kind"), [(5, "int"), (None, "NoneType"), (2.0, "float")])
def test_general_int_rejects_non_strings_naming_the_type(value: object, kind: str) -> None:
    with pytest.raises(TypeError, match=re.escape(f"expected a str, got {kind}: {value!r}")):
        parse_general_int(value)  # type: ignore[arg-type]


def test_select_spec_tuple_without_an_open_range_raises() -> None:
    spec = [T("xring", 1, 10), T("pscpu", 1, 20)]
    assert select_spec_tuple(spec, 20) == T("pscpu", 1, 20)
    message = "spec [AllReduceSpecTuple(alg='xring', shards=1, limit=10), "
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        select_spec_tuple(spec, 21)
    assert str(info.value).endswith("has no range for 21 elements")


@pytest.mark.parametrize(("spec", "kind"), [(3, "int"), (None, "NoneType"), ({"xring": 1}, "dict")])
def test_check_spec_names_the_type_of_a_spec_that_is_neither_text_nor_tuples(spec: object, kind: str) -> None:
    message = f"spec must be a str or a list of AllReduceSpecTuple, got {kind}: {spec!r}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        check_spec(spec)
