"""Range extraction and small-tensor pack plans (pure Python)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

from allreduce.core.validation import check_int

__layer__ = "pure"

__all__ = ["PackPlan", "extract_ranges", "plan_small_tensor_packs"]


def extract_ranges(
    index_list: Sequence[int], range_size_limit: int = 32
) -> tuple[list[list[int]], list[int]]:
    """Splits increasing indices into runs of consecutive values and singles.

    Args:
        index_list: strictly increasing non-negative integers.
        range_size_limit: the most indices one range may hold; a longer run is cut
            into several ranges (and a leftover of one index becomes a single).

    Returns:
        ``(ranges, singles)``: ``ranges`` is a list of ``[first, last]`` pairs of runs
        of at least two indices, ``singles`` the remaining indices, both in order.

    Raises:
        ValueError: ``range_size_limit`` is below 1, or the indices are not strictly
            increasing non-negative integers.
    """
    check_int("range_size_limit", range_size_limit, minimum=1)
    indices = list(index_list)
    for i, value in enumerate(indices):
        check_int(f"index_list[{i}]", value, minimum=0)
        if i and value <= indices[i - 1]:
            raise ValueError(f"index_list must be strictly increasing: {indices[i - 1]} then {value}")
    ranges: list[list[int]] = []
    singles: list[int] = []
    if not indices:
        return ranges, singles

    def close(first: int, last: int) -> None:
        if last > first:
            ranges.append([first, last])
        else:
            singles.append(first)

    first = last = indices[0]
    for value in indices[1:]:
        if value == last + 1 and last - first + 1 < range_size_limit:
            last = value
        else:
            close(first, last)
            first = last = value
    close(first, last)
    return ranges, singles


class PackPlan(NamedTuple):
    """Which tensors of a tower list are packed together.

    ``ranges``: ``[first, last]`` index pairs, one per pack, in order.
    ``unpacked``: the indices left alone, in order.
    """

    ranges: list[list[int]]
    unpacked: list[int]


def plan_small_tensor_packs(
    sizes_in_bytes: Sequence[int],
    dtypes: Sequence[Hashable],
    max_bytes: int,
    max_group: int,
) -> PackPlan:
    """Plans which consecutive small tensors of one dtype to concatenate.

    A tensor is small when it holds at most ``max_bytes`` bytes (``max_bytes == 0``
    packs nothing). Maximal runs of consecutive small tensors of the same dtype are
    cut into packs of at most ``max_group`` tensors; a pack of one is left unpacked.

    Raises:
        ValueError: ``max_bytes`` is negative, ``max_group`` below 1, or the two
            lists differ in length.
    """
    check_int("max_bytes", max_bytes, minimum=0)
    check_int("max_group", max_group, minimum=1)
    if len(sizes_in_bytes) != len(dtypes):
        raise ValueError(f"{len(sizes_in_bytes)} sizes but {len(dtypes)} dtypes")
    ranges: list[list[int]] = []
    run: list[int] = []

    def flush() -> None:
        found, _ = extract_ranges(run, range_size_limit=max_group)
        ranges.extend(found)
        run.clear()

    for i, size in enumerate(sizes_in_bytes):
        small = max_bytes > 0 and size <= max_bytes
        if run and not (small and dtypes[i] == dtypes[run[-1]]):
            flush()
        if small:
            run.append(i)
    flush()
    packed = {i for first, last in ranges for i in range(first, last + 1)}
    unpacked = [i for i in range(len(sizes_in_bytes)) if i not in packed]
    return PackPlan(ranges, unpacked)
