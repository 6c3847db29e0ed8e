"""Compressed SPMD all-reduces across 3 local worker processes x 2 devices: within
``spmd.error_bound`` of the float64 oracle, bitwise identical on every device of every
worker.

One ``spmd.launch`` runs every spec with a pairwise program across workers, with
bfloat16 and float16 wires, float32 and float64 values (int32 for two specs), and a
batch whose ranges carry their own wires (``_compressed.every_compressed_spec``). The inputs of
each worker are ``8**rank`` times the last one's, past float16's range: the float16
results are finite and within the bound only if every worker scales by the same power
of two.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from allreduce import spmd
from tests.spmd import _compressed

pytestmark = pytest.mark.multiworker

WORKERS, DEVICES = 3, 2


@pytest.fixture(scope="module")
def results():
    fn = functools.partial(_compressed.every_compressed_spec, DEVICES)
    return spmd.launch(fn, WORKERS, devices_per_worker=DEVICES, timeout_s=240)


def _errors(outputs, inputs, bound):
    """Each output's largest error as a fraction of the bound (after checking that every
    output is bitwise the first one)."""
    exact = inputs.sum(axis=0)
    limit = bound.limit(np.abs(inputs).sum(axis=0), np.abs(inputs).max())
    for got in outputs:
        assert got.tobytes() == outputs[0].tobytes()
    return np.abs(outputs[0].astype(np.float64) - exact) / np.maximum(limit, np.finfo(np.float64).tiny)


def _outputs(results, key):
    out = [got for per_worker in results for got in per_worker[key]]
    assert len(out) == WORKERS * DEVICES
    return out


@pytest.mark.parametrize("spec", _compressed.SPECS)
def test_every_compressed_spec_is_within_its_bound_and_bitwise_identical(results, spec):
    for compression, length, dtype in _compressed.cases(spec):
        outputs = _outputs(results, (spec, compression, length, dtype))
        assert outputs[0].dtype == np.dtype(dtype)
        inputs = _compressed.inputs(WORKERS, DEVICES, length, dtype)
        bound = spmd.error_bound(spec, WORKERS, DEVICES, compression, dtype=dtype)
        errors = _errors(outputs, inputs, bound)
        assert np.all(np.isfinite(outputs[0]))
        assert errors.max() <= 1.0, (compression, length, dtype, errors.max())
        if dtype == "int32":
            np.testing.assert_array_equal(outputs[0], inputs.sum(axis=0))
        elif length > 1:
            assert errors.max() > 0, "the wire did not round: nothing was compressed"


@pytest.mark.parametrize("spec", _compressed.SPECS)
def test_the_float16_bound_catches_a_wire_that_keeps_fewer_bits(results, spec):
    # bfloat16 keeps 8 bits of mantissa against float16's 11: a wire that lost those
    # 3 bits would break float16's bound on these inputs.
    outputs = _outputs(results, (spec, "bf16", 1000, "float32"))
    inputs = _compressed.inputs(WORKERS, DEVICES, 1000, "float32")
    assert _errors(outputs, inputs, spmd.error_bound(spec, WORKERS, DEVICES, "fp16")).max() > 1.0


def test_a_batch_with_its_own_wire_per_range_and_packing_is_within_the_bound(results):
    spec, compression, lengths = _compressed.BATCH
    bound = spmd.error_bound(spec, WORKERS, DEVICES, compression)
    for i, length in enumerate(lengths):
        outputs = [tower[i] for per_worker in results for tower in per_worker["batch"]]
        inputs = _compressed.inputs(WORKERS, DEVICES, length, "float32", salt=i)
        assert _errors(outputs, inputs, bound).max() <= 1.0
    assert bound.wire > 0


def test_without_compression_only_the_float32_adds_round(results):
    # Exactness of every uncompressed spec on integer-valued inputs: test_spmd_sums.py.
    outputs = _outputs(results, "none")
    inputs = _compressed.inputs(WORKERS, DEVICES, 1000, "float32")
    bound = spmd.error_bound("xring", WORKERS, DEVICES, "none")
    assert bound.wire == 0 and bound.relative < 1e-6
    assert _errors(outputs, inputs, bound).max() <= 1.0


def test_the_bound_is_the_one_client_bound_of_the_same_levels_and_workers():
    import allreduce

    groups = [[0, 1], [2, 3], [4, 5]]
    assert spmd.error_bound("xring", 3, 2, "fp16") == allreduce.error_bound(
        "xring/xring", 6, "fp16", worker_groups=groups
    )
    assert spmd.error_bound("pscpu/torus", 3, 2, "bf16", reduction="mean") == allreduce.error_bound(
        "pscpu/torus", 6, "bf16", worker_groups=groups, reduction="mean"
    )
