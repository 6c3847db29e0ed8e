"""Chunk sizes, ring orders and schedules, and halving-doubling plans on worked examples."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allreduce.planning.algorithms.halving_doubling import HalvingDoublingPlan, halving_doubling_plan
from allreduce.planning.algorithms.ring import (
    Transfer,
    ring_all_gather_steps,
    ring_orders,
    ring_reduce_scatter_steps,
)
from allreduce.planning.schedules import ALIGN_BYTES, HOP_MIN_BYTES, aligned_split_sizes, split_sizes


def test_split_sizes_examples() -> None:
    assert split_sizes(10, 3) == [4, 3, 3]
    assert split_sizes(2, 4) == [1, 1, 0, 0]
    assert split_sizes(0, 2) == [0, 0]
    assert split_sizes(7, 1) == [7]


@pytest.mark.parametrize(
    ("length", "parts", "message"),
    [(-1, 2, "length must be non-negative, got -1"), (4, 0, "parts must be at least 1, got 0")],
)
def test_split_sizes_rejects_bad_counts(length: int, parts: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        split_sizes(length, parts)


def test_ring_orders_examples() -> None:
    assert ring_orders(4, 1) == [[0, 1, 2, 3]]
    assert ring_orders(4, 2) == [[0, 1, 2, 3], [2, 1, 0, 3]]
    assert ring_orders(6, 3) == [[0, 1, 2, 3, 4, 5], [2, 1, 0, 5, 4, 3], [4, 5, 0, 1, 2, 3]]
    assert ring_orders(1, 3) == [[0], [0], [0]]


@given(st.integers(1, 16), st.integers(1, 8))
def test_ring_orders_start_apart_and_alternate_direction(n: int, rings: int) -> None:
    for r, order in enumerate(ring_orders(n, rings)):
        assert order[0] == r * n // rings
        step = -1 if r % 2 else 1
        assert all(order[(i + 1) % n] == (order[i] + step) % n for i in range(n))


@pytest.mark.parametrize(("n", "rings"), [(0, 1), (1, 0), (-1, 2), (0, 0)])
def test_ring_orders_reject_counts_below_one(n: int, rings: int) -> None:
    with pytest.raises(ValueError, match=re.escape(f"got {n}, {rings}")):
        ring_orders(n, rings)


def test_ring_steps_for_three_positions() -> None:
    assert ring_reduce_scatter_steps(3) == [
        [Transfer(0, 1, 0), Transfer(1, 2, 1), Transfer(2, 0, 2)],
        [Transfer(0, 1, 2), Transfer(1, 2, 0), Transfer(2, 0, 1)],
    ]
    assert ring_all_gather_steps(3) == [
        [Transfer(0, 1, 1), Transfer(1, 2, 2), Transfer(2, 0, 0)],
        [Transfer(0, 1, 0), Transfer(1, 2, 1), Transfer(2, 0, 2)],
    ]
    assert ring_reduce_scatter_steps(1) == ring_all_gather_steps(1) == []


@given(st.integers(1, 16))
def test_ring_phases_take_n_minus_one_steps_of_n_transfers(n: int) -> None:
    for steps in (ring_reduce_scatter_steps(n), ring_all_gather_steps(n)):
        assert len(steps) == n - 1
        assert all(len(step) == n for step in steps)


def test_halving_doubling_plan_examples() -> None:
    assert halving_doubling_plan(4, 10) == HalvingDoublingPlan(
        core=4,
        folds=[],
        distances=[2, 1],
        intervals=[[(0, 5), (0, 5), (5, 10), (5, 10)], [(0, 3), (3, 5), (5, 8), (8, 10)]],
    )
    assert halving_doubling_plan(3, 5) == HalvingDoublingPlan(2, [(2, 0)], [1], [[(0, 3), (3, 5)]])
    assert halving_doubling_plan(1, 4) == HalvingDoublingPlan(1, [], [], [])
    assert halving_doubling_plan(7, 0).folds == [(4, 0), (5, 1), (6, 2)]


@given(st.integers(1, 40), st.integers(0, 1000))
def test_halving_keeps_the_larger_lower_half_on_the_clear_bit(n: int, length: int) -> None:
    # The TensorFlow builder splits at start + ceil(size / 2) and keeps the lower half
    # where the round's bit is clear: the plan must say the same.
    plan = halving_doubling_plan(n, length)
    before = [(0, length)] * plan.core
    for d, after in zip(plan.distances, plan.intervals):
        for i in range(plan.core):
            start, stop = before[i]
            middle = start + (stop - start + 1) // 2
            assert after[i] == ((start, middle) if i & d == 0 else (middle, stop))
        before = after


@pytest.mark.parametrize(
    ("n", "length", "message"),
    [(0, 4, "num_devices must be at least 1, got 0"), (2, -1, "length must be non-negative, got -1")],
)
def test_halving_doubling_plan_rejects_bad_counts(n: int, length: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        halving_doubling_plan(n, length)


@pytest.mark.parametrize(
    ("n", "rows"), [(1, 1), (2, 1), (3, 1), (4, 2), (6, 2), (8, 2), (9, 3), (12, 3), (16, 4), (7, 1)]
)
def test_a_torus_chooses_the_largest_divisor_up_to_the_square_root(n: int, rows: int) -> None:
    from allreduce.planning.algorithms.torus import torus_rows

    assert torus_rows(n) == rows and torus_rows(n, 1) == rows


def test_a_torus_grid_is_row_major_and_a_given_row_count_is_kept() -> None:
    from allreduce.planning.algorithms.torus import torus_grid, torus_rows

    assert torus_rows(8, 4) == 4
    assert torus_grid(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert torus_grid(6, 2) == [[0, 1, 2], [3, 4, 5]]
    assert torus_grid(4, 1) == [[0, 1], [2, 3]]
    assert torus_grid(1, 1) == [[0]]


@pytest.mark.parametrize(
    ("n", "rows", "message"),
    [(6, 4, "torus#4: 4 rows do not divide 6 devices"), (0, 1, "got 0, 1"), (4, 0, "got 4, 0")],
)
def test_a_torus_refuses_counts_that_do_not_fit(n: int, rows: int, message: str) -> None:
    from allreduce.planning.algorithms.torus import torus_grid

    with pytest.raises(ValueError, match=re.escape(message)):
        torus_grid(n, rows)


@given(st.integers(2, 40), st.integers(0, 500))
def test_after_halving_core_device_i_holds_the_ith_piece_in_order(n: int, length: int) -> None:
    # The builder concatenates the pieces in device order where devices share memory.
    final = halving_doubling_plan(n, length).intervals[-1]
    assert final[0][0] == 0 and final[-1][1] == length
    assert all(a[1] == b[0] for a, b in itertools.pairwise(final))


def test_aligned_split_sizes_keep_64_byte_pieces_where_the_length_allows() -> None:
    assert (ALIGN_BYTES, HOP_MIN_BYTES) == (64, 1 << 20)
    # 1,000 float32 values are not a multiple of 16 elements: plain near-equal pieces.
    assert aligned_split_sizes(1000, 3, 4) == split_sizes(1000, 3) == [334, 333, 333]
    # 1,024 float32 values are 64 granules of 16: pieces of whole granules.
    assert aligned_split_sizes(1024, 3, 4) == [352, 336, 336]
    assert aligned_split_sizes(1024, 3, 8) == [344, 344, 336]
    # Sizes go to tf.split: ints, never floats of the same value.
    assert all(type(size) is int for size in aligned_split_sizes(1024, 3, 4))
    # Items of 64 bytes or more are their own granule.
    assert aligned_split_sizes(10, 3, 128) == [4, 3, 3]
    assert aligned_split_sizes(0, 2, 4) == [0, 0]
    with pytest.raises(ValueError, match="parts must be at least 1, got 0"):
        aligned_split_sizes(32, 0, 4)


def test_sums_of_four_or_more_cpus_in_the_window_are_cut_in_halves_on_other_cpus() -> None:
    from allreduce.planning.schedules import HALVES_MAX_BYTES, HALVES_MIN_BYTES, halves_hosts

    cpus = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(8)]
    low, high = -(-HALVES_MIN_BYTES // 5), (HALVES_MAX_BYTES - 1) // 5
    assert halves_hosts(cpus[:4], cpus[0], low) == (cpus[1], cpus[2])
    assert halves_hosts(cpus[:4], cpus[0], high) == (cpus[1], cpus[2])
    assert halves_hosts(cpus[:4], cpus[3], low) == (cpus[0], cpus[2])
    assert halves_hosts(cpus[:4], cpus[0], low - 1) is None
    assert halves_hosts(cpus[:4], cpus[0], high + 1) is None
    assert halves_hosts(cpus[:3], cpus[0], -(-HALVES_MIN_BYTES // 4)) is None
    assert halves_hosts(cpus, cpus[5], -(-HALVES_MIN_BYTES // 9)) == (cpus[0], cpus[4])
    # Not all CPUs of one worker, or no CPU for a half but the target: one add_n.
    gpus = [f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(4)]
    assert halves_hosts(gpus, gpus[0], low) is None
    other = "/job:worker/replica:0/task:1/device:CPU:0"
    assert halves_hosts([*cpus[:3], other], cpus[0], low) is None
    assert halves_hosts([cpus[0], cpus[0], cpus[2], cpus[3]], cpus[0], low) is None
