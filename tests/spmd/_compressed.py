"""What the SPMD worker processes run for the compression tests (module-level, so that
``launch`` can pickle it).

Inputs are random, so that casts round, and each worker's are ``8**rank`` times larger
than the last one's: with 3 workers the largest values pass float16's largest finite
value (65504), so a float16 wire works only with a scale, and only with one every
worker agrees on (each worker's own would differ by ``8**rank``).
"""

from __future__ import annotations

import numpy as np

from tests.spmd import _scenarios

#: Every spec with a pairwise program across workers, compressed by the call.
SPECS = (
    "xring",
    "xring#2",
    "rechd",
    "torus",
    "pscpu",
    "pscpu#2",
    "pscpu/xring",
    "xring/rechd",
    "pscpu/torus",
    "pscpu:300:xring",
)
#: (compression, length, dtype) of each spec's calls.
CASES = (
    ("bf16", 1000, "float32"),
    ("fp16", 1000, "float32"),
    ("fp16", 37, "float64"),
)
#: Integers pass every wire unchanged: one case for a flat and a hierarchical spec.
INTEGER_CASE, INTEGER_SPECS = ("bf16", 5, "int32"), ("xring", "pscpu/xring")


def cases(spec: str) -> tuple:
    """The (compression, length, dtype) cases of ``spec``."""
    return (*CASES, INTEGER_CASE) if spec in INTEGER_SPECS else CASES


#: (spec, compression, lengths) of a batch: ranges with their own wires, and packing.
BATCH = ("xring@fp16:100:pscpu/xring@bf16:600:rechd", "none", (3, 5, 70, 700, 900))


def worker_input(rank: int, device: int, length: int, dtype: str, salt: int = 0) -> np.ndarray:
    """The input of ``device`` of worker ``rank``."""
    rng = np.random.default_rng([rank, device, length, salt])
    if dtype.startswith("int"):
        return rng.integers(-1000, 1000, length).astype(dtype)
    return (rng.standard_normal(length) * 8.0**rank * 1000).astype(dtype)


def inputs(workers: int, devices: int, length: int, dtype: str, salt: int = 0) -> np.ndarray:
    """Every input as float64, shape ``(workers * devices, length)``."""
    return np.stack(
        [
            worker_input(r, d, length, dtype, salt).astype(np.float64)
            for r in range(workers)
            for d in range(devices)
        ]
    )


def _tensors(tf, worker, devices, length, dtype, salt=0):
    return _scenarios._tensors(tf, worker, devices, length, dtype, salt, make=worker_input)


def every_compressed_spec(devices: int) -> dict:
    """Each spec with each case of :data:`CASES`, and the :data:`BATCH`; arrays by case."""
    import tensorflow as tf

    from allreduce import spmd

    worker = spmd.start()
    out = {}
    for spec in SPECS:
        for compression, length, dtype in cases(spec):
            tensors = _tensors(tf, worker, devices, length, dtype)
            got = spmd.all_reduce(tensors, spec, compression=compression, timeout_s=60)
            out[spec, compression, length, dtype] = [np.asarray(t) for t in got]
    spec, compression, lengths = BATCH
    per_tensor = [_tensors(tf, worker, devices, n, "float32", salt=i) for i, n in enumerate(lengths)]
    towers = [[ts[d] for ts in per_tensor] for d in range(devices)]
    got = spmd.batch_all_reduce(towers, spec, compression=compression, pack_max_bytes=64, timeout_s=60)
    out["batch"] = [[np.asarray(t) for t in tower] for tower in got]
    got = spmd.all_reduce(_tensors(tf, worker, devices, 1000, "float32"), "xring", timeout_s=60)
    out["none"] = [np.asarray(t) for t in got]
    return out
