"""Soak run: many eager all-reduces in one process, with resident memory and the cache watched.

``python tools/soak.py [--calls 10000] [--new-shapes 2000] [--devices 4] [--spec xring]``
(``make soak``). Two phases, each after a warm-up:

1. ``--calls`` eager calls of one shape: what a training loop does.
2. ``--new-shapes`` calls, each with a shape not seen before, so that every call traces
   a new graph into the library's bounded ``tf.function`` cache.

It prints, per phase, the resident memory before and after (``/proc/self/status``
``VmRSS``) after a warm-up that fills the cache, the cache's size, and how many
TensorFlow retracing warnings were logged,
and exits 1 when memory grew by more than ``--max-growth-mb`` (50) or a warning appeared.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss_mb() -> float:
    """This process's resident memory in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retracing = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retracing" in record.getMessage():
            self.retracing += 1


def _phase(name: str, calls: int, make, spec: str, counter: _Count) -> dict:
    import allreduce
    from allreduce.graph import eager as _eager

    # Warm-up: the first traces, allocator pools, and a full cache of traced graphs.
    for i in range(_eager.CACHE_SIZE + 50):
        allreduce.all_reduce(make(-1 - i), spec)
    before, warned, start = rss_mb(), counter.retracing, time.perf_counter()
    for i in range(calls):
        out = allreduce.all_reduce(make(i), spec)
        if i % 1000 == 0:
            out[0].numpy()
    return {
        "phase": name,
        "calls": calls,
        "seconds": time.perf_counter() - start,
        "rss_before_mb": before,
        "rss_after_mb": rss_mb(),
        "cache_entries": _eager.cache_size(),
        "cache_limit": _eager.CACHE_SIZE,
        "retracing_warnings": counter.retracing - warned,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--new-shapes", type=int, default=2_000)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--spec", default="xring")
    parser.add_argument("--max-growth-mb", type=float, default=50.0)
    args = parser.parse_args(argv)

    import allreduce

    devices = allreduce.logical_devices(args.devices)
    import tensorflow as tf

    counter = _Count()
    tf.get_logger().addHandler(counter)
    fixed = []
    for i, device in enumerate(devices):
        with tf.device(device):
            fixed.append(tf.constant([float(i)] * 1000))

    def new_shape(i: int) -> list:
        values = []
        for d, device in enumerate(devices):
            with tf.device(device):
                values.append(tf.constant([float(d)] * (i + 1)))
        return values

    results = [
        _phase("one shape", args.calls, lambda i: fixed, args.spec, counter),
        _phase("new shapes", args.new_shapes, lambda i: new_shape(i + 200), args.spec, counter),
    ]
    failed = False
    for r in results:
        growth = r["rss_after_mb"] - r["rss_before_mb"]
        failed |= growth > args.max_growth_mb or r["retracing_warnings"] > 0
        print(
            f"{r['phase']:>10}: {r['calls']} calls in {r['seconds']:.1f} s, "
            f"RSS {r['rss_before_mb']:.0f} -> {r['rss_after_mb']:.0f} MiB ({growth:+.1f} MiB), "
            f"cache {r['cache_entries']}/{r['cache_limit']}, retracing warnings {r['retracing_warnings']}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
