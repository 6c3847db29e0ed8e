"""Properties of the spec language."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from allreduce import AllReduceSpecTuple, format_all_reduce_spec, parse_all_reduce_spec, parse_general_int
from allreduce.planning.registry import get_algorithm
from tests.strategies import SUFFIXES, spec_like_text, valid_spec_text


@given(valid_spec_text())
def test_format_inverts_parse(spec: str) -> None:
    parsed = parse_all_reduce_spec(spec)
    assert parse_all_reduce_spec(format_all_reduce_spec(parsed)) == parsed


@given(valid_spec_text())
def test_parse_gives_increasing_limits_and_known_algorithms(spec: str) -> None:
    parsed = parse_all_reduce_spec(spec)
    assert all(isinstance(t, AllReduceSpecTuple) for t in parsed)
    assert parsed[-1].limit == -1
    limits = [t.limit for t in parsed[:-1]]
    assert limits == sorted(set(limits))
    assert all(t.shards >= 1 and get_algorithm(t.alg).name == t.alg for t in parsed)
    assert len(parsed) == spec.count(":") // 2 + 1


@given(valid_spec_text())
def test_each_range_keeps_its_own_compression(spec: str) -> None:
    parsed = parse_all_reduce_spec(spec)
    parts = spec.split(":")[::2]
    assert [t.compression for t in parsed] == [p.partition("@")[2] or None for p in parts]
    # The three-field form of a range without '@' is the same tuple.
    assert all(t == AllReduceSpecTuple(*t[:3]) for t in parsed if t.compression is None)


@given(spec_like_text)
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        parsed = parse_all_reduce_spec(text)
    except ValueError as err:
        assert repr(text) in str(err) or (text == "" and "empty" in str(err))
    else:
        assert parse_all_reduce_spec(format_all_reduce_spec(parsed)) == parsed


@given(st.integers(0, 10**6), st.sampled_from(list(SUFFIXES)))
def test_general_int_suffixes_are_powers_of_1024(mantissa: int, suffix: str) -> None:
    assert parse_general_int(f"{mantissa}{suffix}") == mantissa * SUFFIXES[suffix]


@given(st.text())
def test_general_int_parses_or_raises_value_error(text: str) -> None:
    try:
        value = parse_general_int(text)
    except ValueError as err:
        assert repr(text) in str(err)
    else:
        assert value >= 0 and text[:-1].isascii()
