"""What the SPMD Ray actors run in the tests (module-level: the actors import it by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from tests.spmd._scenarios import _tensors

#: Specs across workers and within them, with (length, dtype) cases that sum exactly.
SPECS = ("xring", "rechd", "pscpu/xring", "torus", "collective")
CASES = ((1000, "float32"), (37, "float64"), (5, "int32"))


def sums(devices: int) -> dict:
    """Each spec and case of this worker, the process, its ``TF_CONFIG`` and its CPUs."""
    import tensorflow as tf

    from allreduce import spmd

    worker = spmd.start()
    out = {"pid": os.getpid(), "tf_config": os.environ["TF_CONFIG"]}
    out["cpus"] = [d.name for d in tf.config.list_logical_devices("CPU")]
    for spec in SPECS:
        for length, dtype in CASES:
            got = spmd.all_reduce(_tensors(tf, worker, devices, length, dtype), spec, timeout_s=30)
            out[spec, length, dtype] = [np.asarray(t) for t in got]
    return out


def sleep_after_writing_pid(folder: str) -> int:
    """Writes this worker's pid to ``folder/pid-RANK`` and sleeps (until killed)."""
    from allreduce import spmd

    worker = spmd.start()
    path = Path(folder) / f"pid-{worker.rank}"
    path.with_suffix(".part").write_text(str(os.getpid()))
    path.with_suffix(".part").rename(path)
    time.sleep(600)
    return worker.rank
