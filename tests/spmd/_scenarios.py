"""What the SPMD worker processes run (module-level, so that ``launch`` can pickle it).

Each worker's inputs are integers times a per-worker, per-device factor, so that every
sum is exact in every dtype and the float64 oracle is known to the test without
talking to the workers.
"""

from __future__ import annotations

import threading

import numpy as np

#: Every spec the SPMD mode runs, with shard counts, levels, size ranges.
SPECS = (
    "xring",
    "xring#2",
    "rechd",
    "torus",
    "pscpu",
    "pscpu#2",
    "collective",
    "pscpu/xring",
    "xring/rechd",
    "pscpu/torus",
    "pscpu/collective",
    "pscpu:300:xring",
)
#: (length, dtype) of each case: lengths below, at and above the worker count.
CASES = ((1, "float32"), (1000, "float32"), (37, "float64"), (37, "int32"))


def worker_input(rank: int, device: int, length: int, dtype: str, salt: int = 0) -> np.ndarray:
    """The input of ``device`` of worker ``rank``."""
    base = (np.arange(length) % 97 - 40).astype(np.float64)
    return (base * (rank * 10 + device + 1 + salt)).astype(dtype)


def expected(num_workers: int, devices: int, length: int, dtype: str, salt: int = 0) -> np.ndarray:
    """The float64 oracle of the sum over every device of every worker."""
    return sum(
        worker_input(r, d, length, dtype, salt).astype(np.float64)
        for r in range(num_workers)
        for d in range(devices)
    )


def _tensors(tf, worker, devices, length, dtype, salt=0, make=None):
    """This worker's input tensors, one per device, from ``make`` (:func:`worker_input`
    unless given)."""
    make = make or worker_input
    out = []
    for d in range(devices):
        with tf.device(f"{worker.device_prefix}/device:CPU:{d}"):
            out.append(tf.constant(make(worker.rank, d, length, dtype, salt)))
    return out


def every_spec(devices: int) -> dict:
    """Every spec, length and dtype with ``all_reduce``; a batch with packing and a
    mean; and four threads on four channels at once. Returns arrays by case."""
    import tensorflow as tf

    from allreduce import spmd

    worker = spmd.start()
    out = {}
    for spec in SPECS:
        for length, dtype in CASES:
            got = spmd.all_reduce(_tensors(tf, worker, devices, length, dtype), spec, timeout_s=30)
            out[spec, length, dtype] = [np.asarray(t) for t in got]
    per_tensor = [
        _tensors(tf, worker, devices, length, "float32", salt=i) for i, length in enumerate((3, 5, 700))
    ]
    towers = [[ts[d] for ts in per_tensor] for d in range(devices)]
    got = spmd.batch_all_reduce(towers, "pscpu:100:xring", pack_max_bytes=64, timeout_s=30)
    out["batch"] = [[np.asarray(t) for t in tower] for tower in got]
    got = spmd.all_reduce(_tensors(tf, worker, devices, 10, "float64"), "rechd", reduction="mean")
    out["mean"] = [np.asarray(t) for t in got]
    out["threads"] = _threads(tf, spmd, worker, devices)
    return out


def _threads(tf, spmd, worker, devices, rounds: int = 5) -> dict:
    """Four threads, each on its own channel and spec, all-reduce ``rounds`` times at once."""
    specs = ("xring", "rechd", "pscpu", "torus")
    inputs = {t: _tensors(tf, worker, devices, 100 * (t + 1), "float32", salt=t) for t in range(len(specs))}
    results: dict = {}

    def work(t: int) -> None:
        got = []
        for _ in range(rounds):
            got.append([np.asarray(x) for x in spmd.all_reduce(inputs[t], specs[t], channel=t, timeout_s=60)])
        results[t] = got

    threads = [threading.Thread(target=work, args=(t,)) for t in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def fails(message: str) -> None:
    """Raises on worker 1 only (after a first exchange on every worker)."""
    import tensorflow as tf

    from allreduce import spmd

    worker = spmd.start()
    spmd.all_reduce([tf.constant([1.0])], "xring", timeout_s=30)
    if worker.rank == 1:
        raise ValueError(message)
    return worker.rank


def one_sum(length: int) -> np.ndarray:
    """One ``xring`` all-reduce of this worker's one-device input; the sum as an array."""
    import tensorflow as tf

    from allreduce import spmd

    worker = spmd.start()
    (summed,) = spmd.all_reduce(_tensors(tf, worker, 1, length, "float32"), "xring", timeout_s=60)
    return summed.numpy()
