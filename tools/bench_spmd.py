"""SPMD all-reduce speed on local worker processes, beside TensorFlow's ``CollectiveReduceV2``.

``python tools/bench_spmd.py [--workers 4] [--sizes 4M,16M] [--rounds 15]
[--specs xring,xring#2,rechd,torus,pscpu,collective]``

Starts ``--workers`` processes (one CPU device each) with ``allreduce.spmd.launch``. In
each, every spec all-reduces one float32 tensor of each size: one warm-up call, then
``--rounds`` rounds in which the specs take turns (interleaved, so that a busy moment
of the machine hits them alike). A call is timed until its result is in host memory;
a round's time is the slowest worker's. Prints the median and quartiles per spec and
size, and each spec's median relative to ``collective`` (one ``CollectiveReduceV2``).
Every result is checked against the exact sum.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

UNITS = {"K": 1 << 10, "M": 1 << 20}


def _bytes(text: str) -> int:
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


def measure(sizes: list[int], specs: list[str], rounds: int) -> dict:
    """One worker's seconds per (spec, size), one sample per round."""
    import numpy as np

    from allreduce import spmd

    worker = spmd.start()
    import tensorflow as tf

    times: dict = {}
    for size in sizes:
        elements = size // 4
        x = tf.constant(np.full(elements, worker.rank + 1, np.float32))
        exact = worker.num_workers * (worker.num_workers + 1) / 2
        for spec in specs:
            out = np.asarray(spmd.all_reduce([x], spec, timeout_s=120)[0])
            if not (out == exact).all():
                raise AssertionError(f"{spec} at {size} bytes: wrong sum")
        for _ in range(rounds):
            for spec in specs:
                start = time.perf_counter()
                np.asarray(spmd.all_reduce([x], spec, timeout_s=120)[0])
                times.setdefault((spec, size), []).append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sizes", default="4M,16M")
    parser.add_argument("--specs", default="xring,xring#2,rechd,torus,pscpu,collective")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    sizes = [_bytes(s) for s in args.sizes.split(",")]
    specs = args.specs.split(",")
    from allreduce import spmd

    fn = functools.partial(measure, sizes, specs, args.rounds)
    per_worker = spmd.launch(fn, args.workers, timeout_s=1800)
    print(f"{args.workers} worker processes x 1 CPU, float32, {args.rounds} interleaved rounds; ms")
    print("| size | spec | median | quartiles | vs collective |")
    print("|---:|---|---:|---|---:|")
    for size in sizes:
        rows = {}
        for spec in specs:
            rounds = [max(w[spec, size][r] for w in per_worker) for r in range(args.rounds)]
            rows[spec] = (statistics.median(rounds), statistics.quantiles(rounds, n=4))
        peer = rows.get("collective", (None,))[0]
        for spec, (median, q) in rows.items():
            ratio = f"{median / peer:.2f}x" if peer else "-"
            quartiles = f"{q[0] * 1e3:.1f}-{q[2] * 1e3:.1f}"
            print(f"| {size >> 20} MiB | {spec} | {median * 1e3:.1f} | {quartiles} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
