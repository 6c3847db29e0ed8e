"""``examples/spmd_training.py``: SPMD training on 2 workers x 2 CPUs equals exact SGD on
one device, bit for bit, and keeps every replica of every worker bitwise identical.

The data are the dyadic rationals of ``tests/multiworker/test_multiworker_training.py``
(float64, two steps), where that test shows that no operation rounds: any order of
additions, any split over replicas and any all-reduce give the exact result.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from allreduce import spmd
from tests import forkserver
from tests.multiworker.test_multiworker_training import LR, _data

pytestmark = pytest.mark.multiworker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _example():
    # On sys.path, so that the worker processes (which inherit it) import it too.
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import spmd_training

    return spmd_training


def test_spmd_training_equals_exact_sgd_with_replicas_identical():
    example = _example()
    batches, initial = _data(seed=3)
    fn = functools.partial(example.train, batches, initial, "pscpu/xring", float(LR))
    histories = spmd.launch(fn, 2, devices_per_worker=2, timeout_s=240)
    assert all(h["digests"] == histories[0]["digests"] for h in histories)
    reference = example.train_single_device(batches, initial, float(LR))
    for got, want in zip(histories[0]["weights"], reference):
        assert got.dtype == np.float64
        assert got.tobytes() == want.tobytes()


def test_the_example_runs_as_a_script_with_its_functions_found_in_the_workers():
    # launch pickles the script's own train() as __main__.train; the workers load the script.
    done = forkserver.run(
        [
            sys.executable,
            str(EXAMPLES / "spmd_training.py"),
            "--workers",
            "2",
            "--devices",
            "1",
            "--steps",
            "3",
        ],
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas bitwise identical on every worker after every step: True" in done.stdout
