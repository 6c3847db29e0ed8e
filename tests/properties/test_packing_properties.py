"""Properties of packing small tensors, on logical CPUs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from allreduce import pack_small_tensors, unpack_small_tensors
from allreduce.graph.packing import PACKED_VAR_PLACEHOLDER
from tests.strategies import TEST_DTYPES, cpu, make_tensor, random_values, shapes


@st.composite
def tower_grads(draw: st.DrawFn) -> tuple[list[list[tuple[tf.Tensor, str]]], list[np.ndarray]]:
    """1-8 towers of (grad, var) pairs with random shapes (scalars and zero-size included)."""
    towers = draw(st.integers(1, 8))
    count = draw(st.integers(0, 12))
    specs = draw(st.lists(st.tuples(shapes, st.sampled_from(TEST_DTYPES)), min_size=count, max_size=count))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grads, arrays = [], []
    for d in range(towers):
        tower, tower_arrays = [], []
        for i, (shape, dtype) in enumerate(specs):
            values = random_values(rng, shape, dtype)
            tower.append((make_tensor(values, dtype, cpu(d)), f"var{i}"))
            tower_arrays.append(values)
        grads.append(tower)
        arrays.append(tower_arrays)
    return grads, arrays


def bits(t: tf.Tensor) -> bytes:
    return t.numpy().tobytes()


@given(tower_grads(), st.integers(0, 64), st.integers(1, 6))
def test_unpack_inverts_pack(data: tuple, max_bytes: int, max_group: int) -> None:
    grads, _ = data
    before = [[(bits(g), g.dtype, g.shape, g.device, v) for g, v in tower] for tower in grads]
    packed, packing = pack_small_tensors(grads, max_bytes=max_bytes, max_group=max_group)
    restored = unpack_small_tensors(packed, packing)
    assert len(restored) == len(grads)
    for d, (tower, original) in enumerate(zip(restored, grads)):
        assert len(tower) == len(original)
        for (g, v), (g0, v0) in zip(tower, original):
            assert v is v0
            assert g.dtype == g0.dtype and g.shape == g0.shape
            assert bits(g) == bits(g0)
            assert g.device == cpu(d)
    # Nothing the caller passed in changed.
    after = [[(bits(g), g.dtype, g.shape, g.device, v) for g, v in tower] for tower in grads]
    assert after == before


@given(tower_grads(), st.integers(1, 64), st.integers(1, 6))
def test_packs_hold_only_small_tensors_of_one_dtype(data: tuple, max_bytes: int, max_group: int) -> None:
    grads, _ = data
    packed, packing = pack_small_tensors(grads, max_bytes=max_bytes, max_group=max_group)
    if packing is None:
        assert packed is grads
        return
    num_packs = len(packing) // len(grads)
    for d, tower in enumerate(packed):
        for p in range(num_packs):
            gpt = packing[f"{d}:{p}"]
            pack, var = tower[p]
            assert var == PACKED_VAR_PLACEHOLDER
            assert 2 <= len(gpt.indices) <= max_group
            members = [grads[d][i][0] for i in gpt.indices]
            assert all(m.shape.num_elements() * m.dtype.size <= max_bytes for m in members)
            assert {m.dtype for m in members} == {pack.dtype}
            assert pack.shape == (sum(m.shape.num_elements() for m in members),)
            assert pack.device == cpu(d)
            expected = np.concatenate([np.reshape(m.numpy(), [-1]) for m in members])
            assert pack.numpy().tobytes() == expected.tobytes()
        # Unpacked pairs follow the packs, in their original order and unchanged.
        packed_indices = {i for p in range(num_packs) for i in packing[f"{d}:{p}"].indices}
        rest = [pair for i, pair in enumerate(grads[d]) if i not in packed_indices]
        assert all(a is b for a, b in zip(tower[num_packs:], rest)) and len(tower) - num_packs == len(rest)
