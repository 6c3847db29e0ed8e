"""Range extraction and pack plans: limits, edge sizes and every validation error."""

from __future__ import annotations

import re

import pytest

from allreduce.planning.ranges import PackPlan, extract_ranges, plan_small_tensor_packs


def test_extract_ranges_default_limit_is_32() -> None:
    assert extract_ranges(list(range(40))) == ([[0, 31], [32, 39]], [])
    assert extract_ranges(list(range(33))) == ([[0, 31]], [32])


def test_extract_ranges_examples() -> None:
    assert extract_ranges([]) == ([], [])
    assert extract_ranges([5]) == ([], [5])
    assert extract_ranges((0, 1, 3, 5, 6, 7, 9)) == ([[0, 1], [5, 7]], [3, 9])
    assert extract_ranges([0, 1, 2, 3, 4], range_size_limit=1) == ([], [0, 1, 2, 3, 4])
    assert extract_ranges([2, 3, 4, 5, 6], range_size_limit=2) == ([[2, 3], [4, 5]], [6])


def test_extract_ranges_leaves_its_input_alone() -> None:
    indices = [0, 1, 2, 9]
    extract_ranges(indices, range_size_limit=2)
    assert indices == [0, 1, 2, 9]


@pytest.mark.parametrize(
    ("indices", "error", "message"),
    [
        ([1, 1], ValueError, "index_list must be strictly increasing: 1 then 1"),
        ([0, 5, 4], ValueError, "index_list must be strictly increasing: 5 then 4"),
        ([3, -1], ValueError, "index_list[1] must be at least 0, got -1"),
        ([-2], ValueError, "index_list[0] must be at least 0, got -2"),
        ([0, True], TypeError, "index_list[1] must be an int, got bool: True"),
        ([1.0], TypeError, "index_list[0] must be an int, got float: 1.0"),
        (["1"], TypeError, "index_list[0] must be an int, got str: '1'"),
    ],
)
def test_extract_ranges_rejects_bad_indices(indices: list, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        extract_ranges(indices)


@pytest.mark.parametrize(
    ("limit", "error", "message"),
    [
        (True, TypeError, "range_size_limit must be an int, got bool: True"),
        (4.0, TypeError, "range_size_limit must be an int, got float: 4.0"),
        ("4", TypeError, "range_size_limit must be an int, got str: '4'"),
        (0, ValueError, "range_size_limit must be at least 1, got 0"),
        (-5, ValueError, "range_size_limit must be at least 1, got -5"),
    ],
)
def test_extract_ranges_rejects_bad_limits(limit: object, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        extract_ranges([0, 1], range_size_limit=limit)  # type: ignore[arg-type]


def test_pack_plan_example() -> None:
    sizes = [4, 4, 100, 4, 4, 4, 8, 8]
    dtypes = ["f", "f", "f", "f", "f", "i", "i", "i"]
    plan = plan_small_tensor_packs(sizes, dtypes, max_bytes=8, max_group=10)
    assert plan == PackPlan(ranges=[[0, 1], [3, 4], [5, 7]], unpacked=[2])


def test_pack_plan_cuts_long_runs_at_max_group() -> None:
    plan = plan_small_tensor_packs([1] * 40, ["f"] * 40, max_bytes=1, max_group=3)
    assert plan.ranges == [[i, i + 2] for i in range(0, 39, 3)]
    assert plan.unpacked == [39]
    plan = plan_small_tensor_packs([1] * 40, ["f"] * 40, max_bytes=1, max_group=40)
    assert plan == PackPlan([[0, 39]], [])


def test_pack_plan_max_bytes_zero_packs_nothing_even_empty_tensors() -> None:
    assert plan_small_tensor_packs([0, 0, 0], ["f"] * 3, max_bytes=0, max_group=4) == PackPlan([], [0, 1, 2])


def test_pack_plan_max_bytes_is_inclusive() -> None:
    assert plan_small_tensor_packs([1, 1, 2], ["f"] * 3, max_bytes=1, max_group=4) == PackPlan([[0, 1]], [2])
    assert plan_small_tensor_packs([0, 0], ["f"] * 2, max_bytes=1, max_group=4) == PackPlan([[0, 1]], [])


def test_pack_plan_of_nothing() -> None:
    assert plan_small_tensor_packs([], [], max_bytes=64, max_group=4) == PackPlan([], [])


@pytest.mark.parametrize(
    ("max_bytes", "max_group", "error", "message"),
    [
        (-1, 2, ValueError, "max_bytes must be at least 0, got -1"),
        (8, 0, ValueError, "max_group must be at least 1, got 0"),
        (True, 2, TypeError, "max_bytes must be an int, got bool: True"),
        (8.0, 2, TypeError, "max_bytes must be an int, got float: 8.0"),
        (8, "2", TypeError, "max_group must be an int, got str: '2'"),
        (8, False, TypeError, "max_group must be an int, got bool: False"),
    ],
)
def test_pack_plan_rejects_bad_limits(
    max_bytes: object, max_group: object, error: type, message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        plan_small_tensor_packs([1, 1], ["f", "f"], max_bytes, max_group)  # type: ignore[arg-type]


def test_pack_plan_rejects_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match=re.escape("3 sizes but 2 dtypes")):
        plan_small_tensor_packs([1, 1, 1], ["f", "f"], 8, 2)
