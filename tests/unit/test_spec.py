"""The spec language on examples from its documentation, and its error messages."""

from __future__ import annotations

import re

import pytest

from allreduce import (
    AllReduceSpecTuple,
    build_all_reduce_device_prefixes,
    format_all_reduce_spec,
    group_device_names,
    parse_all_reduce_spec,
    parse_general_int,
)
from allreduce.planning.devices import parse_device_name
from allreduce.planning.registry import AlgorithmInfo, algorithm_names, get_algorithm, register
from allreduce.planning.spec import select_spec_tuple

T = AllReduceSpecTuple


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("xring", [T("xring", 1, -1)]),
        ("xring#2", [T("xring", 2, -1)]),
        ("nccl/xring", [T("nccl/xring", 1, -1)]),
        ("pscpu/pscpu#2", [T("pscpu/pscpu", 2, -1)]),
        ("pscpu:2k:pscpu#2:64k:xring", [T("pscpu", 1, 2048), T("pscpu", 2, 65536), T("xring", 1, -1)]),
        ("rechd:0:collective", [T("rechd", 1, 0), T("collective", 1, -1)]),
        (
            "simple:1M:better:3G:trivial",
            [T("simple", 1, 2**20), T("better", 1, 3 * 2**30), T("trivial", 1, -1)],
        ),
    ],
)
def test_documented_examples(spec: str, expected: list) -> None:
    assert parse_all_reduce_spec(spec) == expected


def test_every_seed_name_and_new_name_is_known() -> None:
    for name in ["nccl", "nccl/xring", "nccl/rechd", "nccl/pscpu", "xring", "pscpu", "psgpu", "pscpu/pscpu"]:
        assert parse_all_reduce_spec(name)[0].alg == name
    for name in ["rechd", "simple", "trivial", "better", "collective"]:
        assert name in algorithm_names()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty"),
        ("ring", "invalid algorithm 'ring'"),
        ("xring:2k", "not well formed"),
        ("xring:2k:pscpu:4k", "not well formed"),
        ("xring:2x:pscpu", "non-integer range '2x'"),
        ("xring:-1:pscpu", "non-integer range '-1'"),
        ("xring:4k:pscpu:2k:xring", "range limit '2k' (2048) does not exceed the previous limit (4096)"),
        ("xring:4k:pscpu:4096:xring", "does not exceed"),
        ("xring#", "shard count missing"),
        ("xring#two", "non-integer shards 'two'"),
        ("xring#0", "at least 1"),
        ("rechd#2", "takes no shard count"),
        ("xring::pscpu", "non-integer range ''"),
        (":1:xring", "empty algorithm part"),
        ("xring/xring/xring", "invalid algorithm"),
        ("trivial/xring", "invalid algorithm"),
        ("xring#2#3", "non-integer shards '2#3'"),
        ("XRING", "invalid algorithm 'XRING'"),
        (" xring", "invalid algorithm ' xring'"),
    ],
)
def test_malformed_specs_name_the_spec_and_the_part(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_all_reduce_spec(spec)
    assert fragment in str(info.value)
    if spec:
        assert repr(spec) in str(info.value)


def test_non_string_spec_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_all_reduce_spec(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("32k", 32768), ("2K", 2048), ("3M", 3 << 20), ("1T", 1 << 40)]
)
def test_general_int(text: str, value: int) -> None:
    assert parse_general_int(text) == value


@pytest.mark.parametrize("text", ["", "k", "1.5", "-1", "+1", " 1", "1 ", "1_000", "1kk", "1m", "\u0661"])
def test_general_int_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_general_int(text)


def test_format_uses_suffixes_and_omits_single_shards() -> None:
    spec = [T("pscpu", 1, 2048), T("pscpu", 2, 65536), T("xring", 1, -1)]
    assert format_all_reduce_spec(spec) == "pscpu:2k:pscpu#2:64k:xring"
    assert format_all_reduce_spec([T("xring", 1, -1)]) == "xring"
    assert format_all_reduce_spec([("rechd", 1, 1000), ("xring", 3, -1)]) == "rechd:1000:xring#3"


@pytest.mark.parametrize(
    "tuples",
    [
        [],
        [T("ring", 1, -1)],
        [T("xring", 0, -1)],
        [T("rechd", 2, -1)],
        [T("xring", 1, 5)],
        [T("xring", 1, 5), T("xring", 1, 5), T("xring", 1, -1)],
        [T("xring", 1, -3), T("xring", 1, -1)],
    ],
)
def test_format_rejects_invalid_tuples(tuples: list) -> None:
    with pytest.raises(ValueError):
        format_all_reduce_spec(tuples)


def test_select_spec_tuple_uses_element_counts() -> None:
    spec = parse_all_reduce_spec("pscpu:2k:pscpu#2:64k:xring")
    assert select_spec_tuple(spec, 0).shards == 1
    assert select_spec_tuple(spec, 2048) == T("pscpu", 1, 2048)
    assert select_spec_tuple(spec, 2049) == T("pscpu", 2, 65536)
    assert select_spec_tuple(spec, 10**9).alg == "xring"


def test_device_prefixes() -> None:
    assert build_all_reduce_device_prefixes("worker", 2) == ["/job:worker/task:0", "/job:worker/task:1"]
    assert build_all_reduce_device_prefixes("localhost", 1) == ["/job:localhost"]
    for job, tasks in [("localhost", 2), ("worker", 0)]:
        with pytest.raises(ValueError):
            build_all_reduce_device_prefixes(job, tasks)


def test_group_device_names_wraps_around() -> None:
    assert group_device_names(["a", "b", "c"], 2) == [["a", "c"], ["b", "a"]]
    assert group_device_names(["a", "b", "c", "d"], 2) == [["a", "c"], ["b", "d"]]
    for size in [0, -1, 5]:
        with pytest.raises(ValueError, match=str(size)):
            group_device_names(["a", "b", "c", "d"], size)


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("/job:worker/replica:0/task:3/device:GPU:1", ("worker", 0, 3, "GPU", 1)),
        ("/cpu:0", (None, None, None, "CPU", 0)),
        ("/device:CPU:2", (None, None, None, "CPU", 2)),
        ("/job:localhost", ("localhost", None, None, None, None)),
        ("", (None, None, None, None, None)),
    ],
)
def test_parse_device_name(name: str, parts: tuple) -> None:
    parsed = parse_device_name(name)
    assert (parsed.job, parsed.replica, parsed.task, parsed.device_type, parsed.index) == parts


@pytest.mark.parametrize("name", ["/job:", "/gpu", "/task:x", "/device:GPU:x/oops"])
def test_parse_device_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        parse_device_name(name)


def test_registry_rejects_duplicates_and_bad_names() -> None:
    info = get_algorithm("xring")
    with pytest.raises(ValueError, match="already registered"):
        register(info)
    for bad in ["a:b", "a#b", "a/b", ""]:
        with pytest.raises(ValueError, match="invalid algorithm name"):
            register(AlgorithmInfo(bad, "x", None, info.device_types))


def test_hierarchical_entries_describe_their_levels() -> None:
    info = get_algorithm("nccl/xring")
    assert info.levels == ("nccl", "xring") and info.is_hierarchical
    assert info.takes_shards and info.device_types == frozenset({"GPU"})
    assert not get_algorithm("pscpu/rechd").takes_shards
