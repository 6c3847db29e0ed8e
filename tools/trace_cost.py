"""Graph-building cost: seconds to trace ``batch_all_reduce`` of many tensors, beside plain TensorFlow.

``python tools/trace_cost.py [--tensors 1000] [--devices 4] [--spec xring] [--repeats 3]``

Each contender is traced into a fresh ``tf.function`` (``get_concrete_function``) over
``--tensors`` one-element float32 tensors per device; the median of ``--repeats`` traces,
all measured in one run and interleaved, is reported per 1,000 tensors with its ratio to
the baseline. The baseline is what plain TensorFlow emits for the same all-reduce: per
tensor one ``add_n`` on a device and one copy per device. Contenders: unpacked, packed
with the default group of 10 tensors, and packed with groups of 256.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _trace(tf, body, flat, devices, graph: str) -> float:
    """Seconds to build ``body``'s graph over placeholders like ``flat``."""
    if graph == "function":
        function = tf.function(body, autograph=False)
        start = time.perf_counter()
        function.get_concrete_function(*flat)
        return time.perf_counter() - start
    with tf.Graph().as_default():
        per_device = len(flat) // len(devices)
        inputs = []
        for i, t in enumerate(flat):
            with tf.device(devices[i // per_device]):
                inputs.append(tf.compat.v1.placeholder(t.dtype, t.shape))
        start = time.perf_counter()
        body(*inputs)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--spec", default="xring")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--graph",
        choices=("function", "tf1"),
        default="function",
        help="trace into tf.function (default), or build a TensorFlow 1 graph of placeholders, "
        "which leaves out tf.function's own per-argument and per-output ops",
    )
    args = parser.parse_args(argv)

    import allreduce

    devices = allreduce.logical_devices(args.devices)
    import tensorflow as tf

    towers = []
    for d in devices:
        with tf.device(d):
            towers.append([tf.constant([1.0]) for _ in range(args.tensors)])

    def baseline(*flat):
        per = [flat[i * args.tensors : (i + 1) * args.tensors] for i in range(len(devices))]
        out = [[] for _ in devices]
        for t in range(args.tensors):
            with tf.device(devices[t % len(devices)]):
                total = tf.add_n([tower[t] for tower in per])
            for d, device in enumerate(devices):
                with tf.device(device):
                    out[d].append(tf.identity(total))
        return out

    def ours(**options):
        def body(*flat):
            per = [list(flat[i * args.tensors : (i + 1) * args.tensors]) for i in range(len(devices))]
            return allreduce.batch_all_reduce(per, args.spec, devices=devices, **options)

        return body

    contenders = {
        "plain TensorFlow (add_n + copies)": baseline,
        "batch_all_reduce, unpacked": ours(),
        "batch_all_reduce, packed (groups of 10)": ours(pack_max_bytes=1024),
        "batch_all_reduce, packed (groups of 256)": ours(pack_max_bytes=1024, pack_max_group=256),
    }
    flat = [t for tower in towers for t in tower]
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, body in contenders.items():
            samples[name].append(_trace(tf, body, flat, devices, args.graph))
    base = statistics.median(samples["plain TensorFlow (add_n + copies)"])
    print(
        f"{args.tensors} one-element tensors on {args.devices} devices, spec {args.spec!r}, "
        f"{args.graph} graph, median of {args.repeats}"
    )
    for name, times in samples.items():
        median = statistics.median(times)
        per_1000 = median * 1000 / args.tensors
        print(f"  {name:<42} {per_1000:7.2f} s per 1,000 tensors  {median / base:5.2f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
