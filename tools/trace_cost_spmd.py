"""Trace cost per worker in SPMD mode, beside the one-client mode.

``python tools/trace_cost_spmd.py [--workers 4,16,64,256] [--specs xring,rechd,torus]
[--tensors 50] [--elements 1000] [--client-max 16]``

For each worker count and spec, traces worker 0's graph of ``spmd.batch_all_reduce``
(``--tensors`` float32 tensors of ``--elements`` each, no packing) into a TensorFlow 1
graph of placeholders: no cluster runs, since tracing only names devices and keys. It
prints the ops of that graph, the seconds to trace it, the algorithm's steps per worker
and the ops per tensor and step. The one-client mode (``allreduce.batch_all_reduce`` over
``n`` logical CPUs, all of them traced by one process) is traced for ``n`` up to
``--client-max``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def steps(spec: str, n: int) -> int:
    """Steps in which one worker sends (the algorithm's own count)."""
    if spec == "xring":
        return 2 * (n - 1)
    if spec == "rechd":
        return 2 * int(math.log2(n))
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return 2 * (n // rows - 1) + 2 * (rows - 1)


def trace_worker(tf, spec: str, n: int, tensors: int, elements: int) -> tuple[int, float]:
    """(ops, seconds) of worker 0's graph."""
    from allreduce.planning.plan import plan_batch
    from allreduce.planning.spec import parse_all_reduce_spec
    from allreduce.spmd.emit import SpmdOptions, emit_worker_batch

    device = "/job:worker/replica:0/task:0/device:CPU:0"
    with tf.Graph().as_default() as graph:
        with tf.device(device):
            inputs = [tf.compat.v1.placeholder(tf.float32, [elements]) for _ in range(tensors)]
        before = len(graph.get_operations())
        start = time.perf_counter()
        buckets = plan_batch(
            [elements] * tensors, [tf.float32] * tensors, [4] * tensors, parse_all_reduce_spec(spec)
        )
        emit_worker_batch([inputs], [device], buckets, SpmdOptions(rank=0, num_workers=n))
        seconds = time.perf_counter() - start
        return len(graph.get_operations()) - before, seconds


def trace_client(
    tf, allreduce, spec: str, devices: list[str], tensors: int, elements: int
) -> tuple[int, float]:
    """(ops, seconds) of the one-client graph over ``devices``."""
    with tf.Graph().as_default() as graph:
        towers = []
        for d in devices:
            with tf.device(d):
                towers.append([tf.compat.v1.placeholder(tf.float32, [elements]) for _ in range(tensors)])
        before = len(graph.get_operations())
        start = time.perf_counter()
        allreduce.batch_all_reduce(towers, spec, devices=devices)
        seconds = time.perf_counter() - start
        return len(graph.get_operations()) - before, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="4,16,64,256")
    parser.add_argument("--specs", default="xring,rechd,torus")
    parser.add_argument("--tensors", type=int, default=50)
    parser.add_argument("--elements", type=int, default=1000)
    parser.add_argument("--client-max", type=int, default=16)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    specs = args.specs.split(",")

    import allreduce

    client_devices = allreduce.logical_devices(max(n for n in counts if n <= args.client_max))
    import tensorflow as tf

    print(f"{args.tensors} float32 tensors of {args.elements} elements, no packing; one worker's graph")
    print("| spec | workers | steps | SPMD ops per worker | ops / (tensor x step) | SPMD trace s", end="")
    print(" | one-client ops | one-client trace s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec in specs:
        for n in counts:
            ops, seconds = trace_worker(tf, spec, n, args.tensors, args.elements)
            k = steps(spec, n)
            client = "-", "-"
            if n <= args.client_max:
                c_ops, c_s = trace_client(
                    tf, allreduce, spec, client_devices[:n], args.tensors, args.elements
                )
                client = f"{c_ops:,}", f"{c_s:.2f}"
            per = ops / (args.tensors * k)
            print(f"| {spec} | {n} | {k} | {ops:,} | {per:.2f} | {seconds:.2f} | {client[0]} | {client[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
