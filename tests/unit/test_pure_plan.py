"""The batch plan (pure): which tensors each all-reduce of a batch carries, and how."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allreduce.planning.plan import DEFAULT_PACK_MAX_GROUP, Bucket, plan_batch
from allreduce.planning.spec import parse_all_reduce_spec


def test_packs_come_first_then_lone_tensors_in_order() -> None:
    spec = parse_all_reduce_spec("xring")
    buckets = plan_batch([1, 1, 100, 1, 1], ["f"] * 5, [4] * 5, spec, pack_max_bytes=8, pack_max_group=10)
    assert [b.members for b in buckets] == [(0, 1), (3, 4), (2,)]
    assert [b.sizes for b in buckets] == [(1, 1), (1, 1), (100,)]
    assert [b.length for b in buckets] == [2, 2, 100]
    assert [b.packed for b in buckets] == [True, True, False]
    assert [b.index for b in buckets] == [0, 1, 2]


def test_each_bucket_takes_the_range_of_its_whole_length() -> None:
    spec = parse_all_reduce_spec("pscpu:3:xring#2")
    buckets = plan_batch([2, 2, 2, 5], ["f"] * 4, [4] * 4, spec, pack_max_bytes=8, pack_max_group=2)
    assert [(b.members, b.spec.alg, b.index) for b in buckets] == [
        ((0, 1), "xring", 0),
        ((2,), "pscpu", 0),
        ((3,), "xring", 1),
    ]


def test_no_packing_by_default_and_the_default_group() -> None:
    buckets = plan_batch([1, 1, 1], ["f"] * 3, [4] * 3, parse_all_reduce_spec("xring"))
    assert [b.members for b in buckets] == [(0,), (1,), (2,)]
    assert DEFAULT_PACK_MAX_GROUP == 256
    # Not even tensors of no bytes, which any positive limit would pack.
    empty = plan_batch([0, 0, 0], ["f"] * 3, [4] * 3, parse_all_reduce_spec("xring"))
    assert [b.members for b in empty] == [(0,), (1,), (2,)]


def test_lists_of_different_lengths_are_a_value_error() -> None:
    with pytest.raises(ValueError, match=re.escape("2 sizes, 1 dtypes and 2 item sizes")):
        plan_batch([1, 2], ["f"], [4, 4], parse_all_reduce_spec("xring"))


@given(
    st.lists(st.tuples(st.integers(0, 50), st.sampled_from(["a", "b"])), max_size=30),
    st.integers(0, 64),
    st.integers(1, 6),
    st.integers(0, 40),
)
def test_every_tensor_is_in_exactly_one_bucket_of_one_dtype(tensors, max_bytes, max_group, limit) -> None:
    sizes = [s for s, _ in tensors]
    dtypes = [d for _, d in tensors]
    spec = parse_all_reduce_spec(f"pscpu:{limit}:xring")
    buckets = plan_batch(
        sizes, dtypes, [4] * len(sizes), spec, pack_max_bytes=max_bytes, pack_max_group=max_group
    )
    members = sorted(i for b in buckets for i in b.members)
    assert members == list(range(len(sizes)))
    for b in buckets:
        assert isinstance(b, Bucket) and len(b.members) <= max(1, max_group)
        assert len({dtypes[i] for i in b.members}) == 1
        assert b.sizes == tuple(sizes[i] for i in b.members)
        assert b.spec.alg == ("pscpu" if b.length <= limit else "xring")
        if b.packed:
            assert all(sizes[i] * 4 <= max_bytes for i in b.members)
            assert list(b.members) == list(range(b.members[0], b.members[-1] + 1))
    for alg in ("pscpu", "xring"):
        assert [b.index for b in buckets if b.spec.alg == alg] == list(
            range(sum(b.spec.alg == alg for b in buckets))
        )
