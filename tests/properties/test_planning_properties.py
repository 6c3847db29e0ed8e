"""Properties of device grouping, range extraction, pack plans and schedules (no graph)."""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import assume, given
from hypothesis import strategies as st

from allreduce import extract_ranges, group_device_names
from allreduce.planning.algorithms.halving_doubling import halving_doubling_plan
from allreduce.planning.algorithms.ring import ring_all_gather_steps, ring_orders, ring_reduce_scatter_steps
from allreduce.planning.devices import group_by_worker, parse_device_name
from allreduce.planning.ranges import plan_small_tensor_packs
from allreduce.planning.schedules import split_sizes
from tests.strategies import device_names

increasing_indices = st.lists(st.integers(0, 200), unique=True, max_size=60).map(sorted)


def maximal_runs(indices: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] + 1 == i:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


@given(device_names, st.data())
def test_grouping_covers_every_device_with_full_groups(devices: list[str], data: st.DataObject) -> None:
    size = data.draw(st.integers(1, len(devices)))
    groups = group_device_names(devices, size)
    assert len(groups) == -(-len(devices) // size)
    assert all(len(g) == size for g in groups)
    counts = Counter(d for g in groups for d in g)
    assert set(counts) == set(devices)
    if len(devices) % size == 0:
        assert all(c == 1 for c in counts.values())
    else:
        assert all(c <= 2 for c in counts.values())


@given(device_names)
def test_group_by_worker_partitions_by_task(devices: list[str]) -> None:
    groups = group_by_worker(devices)
    assert sorted(i for g in groups for i in g) == list(range(len(devices)))
    for g in groups:
        assert len({parse_device_name(devices[i]).worker for i in g}) == 1
    workers = [parse_device_name(devices[g[0]]).worker for g in groups]
    assert len(set(workers)) == len(workers)


@given(increasing_indices, st.integers(1, 40))
def test_extract_ranges_covers_input_in_order_within_limit(indices: list[int], limit: int) -> None:
    ranges, singles = extract_ranges(indices, range_size_limit=limit)
    covered = sorted([i for first, last in ranges for i in range(first, last + 1)] + singles)
    assert covered == indices
    assert singles == sorted(singles)
    assert [r[0] for r in ranges] == sorted(r[0] for r in ranges)
    for first, last in ranges:
        assert 2 <= last - first + 1 <= limit
        assert all(i in indices for i in range(first, last + 1))


@given(increasing_indices, st.integers(2, 40))
def test_extract_ranges_matches_maximal_runs_when_they_fit(indices: list[int], limit: int) -> None:
    runs = maximal_runs(indices)
    assume(all(len(r) <= limit for r in runs))
    ranges, singles = extract_ranges(indices, range_size_limit=limit)
    assert ranges == [[r[0], r[-1]] for r in runs if len(r) > 1]
    assert singles == [r[0] for r in runs if len(r) == 1]


@given(
    st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["f16", "f32", "i32"])), max_size=40),
    st.integers(0, 300),
    st.integers(1, 12),
)
def test_pack_plan_respects_size_group_and_dtype(entries: list, max_bytes: int, max_group: int) -> None:
    sizes = [s for s, _ in entries]
    dtypes = [d for _, d in entries]
    plan = plan_small_tensor_packs(sizes, dtypes, max_bytes, max_group)
    packed = [i for first, last in plan.ranges for i in range(first, last + 1)]
    assert sorted(packed + plan.unpacked) == list(range(len(entries)))
    assert plan.unpacked == sorted(plan.unpacked)
    for first, last in plan.ranges:
        members = range(first, last + 1)
        assert 2 <= len(members) <= max_group
        assert all(max_bytes > 0 and sizes[i] <= max_bytes for i in members)
        assert len({dtypes[i] for i in members}) == 1
    # Maximal: two neighbours that are small, of one dtype, and both unpacked would have been packed.
    for a, b in zip(plan.unpacked, plan.unpacked[1:]):
        if b == a + 1 and dtypes[a] == dtypes[b] and max_bytes > 0 and max_group > 1:
            assert not (sizes[a] <= max_bytes and sizes[b] <= max_bytes)


@given(st.integers(0, 10**6), st.integers(1, 64))
def test_split_sizes_are_near_equal_and_add_up(length: int, parts: int) -> None:
    sizes = split_sizes(length, parts)
    assert len(sizes) == parts and sum(sizes) == length
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


@given(st.integers(1, 12), st.integers(1, 6))
def test_ring_orders_are_permutations(n: int, rings: int) -> None:
    orders = ring_orders(n, rings)
    assert len(orders) == rings
    assert all(sorted(order) == list(range(n)) for order in orders)


@given(st.integers(1, 12))
def test_ring_schedule_reduces_every_chunk_then_gathers_it_everywhere(n: int) -> None:
    # Simulate contributions as sets of positions: partial[p][c] = who has been added in.
    partial = [[{p} for _ in range(n)] for p in range(n)]
    for step in ring_reduce_scatter_steps(n):
        sent = {(t.dst, t.chunk): partial[t.src][t.chunk] for t in step}
        for (dst, chunk), contribution in sent.items():
            assert dst not in contribution
            partial[dst][chunk] = contribution | {dst}
    everyone = set(range(n))
    for p in range(n):
        assert partial[p][(p + 1) % n] == everyone
    have = [{(p + 1) % n} for p in range(n)]
    for step in ring_all_gather_steps(n):
        for t in step:
            assert t.chunk in have[t.src]
        for t in step:
            have[t.dst].add(t.chunk)
    assert all(h == set(range(n)) for h in have)


@given(st.integers(1, 40), st.integers(0, 1000))
def test_halving_doubling_plan_partitions_the_vector(n: int, length: int) -> None:
    plan = halving_doubling_plan(n, length)
    assert plan.core & (plan.core - 1) == 0 and plan.core <= n < 2 * plan.core
    assert sorted(e for e, _ in plan.folds) == list(range(plan.core, n))
    assert all(p < plan.core for _, p in plan.folds)
    assert len(plan.distances) == plan.core.bit_length() - 1
    # Simulate who is summed into which interval: each round pairs i with i ^ d.
    owned = {i: (0, length) for i in range(plan.core)}
    members = {i: {i} | {e for e, p in plan.folds if p == i} for i in range(plan.core)}
    for d, after in zip(plan.distances, plan.intervals):
        for i in range(plan.core):
            start, stop = after[i]
            assert owned[i][0] <= start <= stop <= owned[i][1]
            assert owned[i] == owned[i ^ d]
        members = {i: members[i] | members[i ^ d] for i in range(plan.core)}
        owned = dict(enumerate(after))
    final = sorted(owned.values())
    assert final[0][0] == 0 and final[-1][1] == length
    assert all(a[1] == b[0] for a, b in itertools.pairwise(final))
    assert all(m == set(range(n)) for m in members.values())
