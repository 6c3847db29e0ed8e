"""``examples/spmd_training.py``: SPMD training on 2 workers x 2 CPUs equals exact SGD on
one device, bit for bit, and keeps every replica of every worker bitwise identical.

The data are the dyadic rationals of ``tests/multiworker/test_multiworker_training.py``
(float64, two steps), where that test shows that no operation rounds: any order of
additions, any split over replicas and any all-reduce give the exact result.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

from allreduce import spmd
from tests.multiworker.test_multiworker_training import LR, _data

pytestmark = pytest.mark.multiworker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example():
    # On sys.path, so that the worker processes (which inherit it) import it too.
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import spmd_training

    return spmd_training


def _reference(example, batches, initial):
    # In a fresh process: this pytest process's TensorFlow has its own devices.
    return spmd.launch(functools.partial(example.train_single_device, batches, initial, float(LR)), 1)[0]


def test_spmd_training_equals_exact_sgd_with_replicas_identical():
    example = _example()
    batches, initial = _data(seed=3)
    fn = functools.partial(example.train, batches, initial, "pscpu/xring", float(LR))
    histories = spmd.launch(fn, 2, devices_per_worker=2, timeout_s=240)
    assert all(h["digests"] == histories[0]["digests"] for h in histories)
    reference = _reference(example, batches, initial)
    for got, want in zip(histories[0]["weights"], reference):
        assert got.dtype == np.float64
        assert got.tobytes() == want.tobytes()
