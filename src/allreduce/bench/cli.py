"""``allreduce-bench``: all-reduce bandwidth and correctness, in the style of nccl-tests.

Run ``allreduce-bench --help`` for the options. The exit status is 0 when every result
was exact on every device, 1 when a row had wrong results or failed, 2 on bad options.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

# Before TensorFlow's runtime starts (reading them later has no effect).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from allreduce.bench.cases import (
    DTYPE_SIZES,
    Case,
    many_small_case,
    max_exact_devices,
    shapes_case,
    sweep_cases,
)
from allreduce.bench.contenders import Contender, Setup, SpecContender, default_specs
from allreduce.spec import parse_all_reduce_spec, parse_general_int

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

WORKLOADS = ("sweep", "many-small", "model")
QUICK = {"min_bytes": 1 << 10, "max_bytes": 16 << 20, "factor": 16, "warmup": 2, "iters": 5}
FULL = {"min_bytes": 1 << 10, "max_bytes": 128 << 20, "factor": 2, "warmup": 3, "iters": 10}
BATCH_PACKING = {"pack_max_bytes": 64 << 10, "pack_max_group": 256}


def _size(text: str) -> int:
    try:
        return parse_general_int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(text: str) -> int:
    value = _size(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    return _size(text)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``allreduce-bench``."""
    p = argparse.ArgumentParser(
        prog="allreduce-bench",
        description=(
            "Time all-reduce specs against numpy and TensorFlow's own all-reduces, check every "
            "result on every device, and print an nccl-tests style table."
        ),
    )
    p.add_argument(
        "--devices", type=_positive, default=4, help="devices (per worker with --workers); default 4"
    )
    p.add_argument("--device-type", choices=("cpu", "gpu"), default="cpu", help="default cpu (logical CPUs)")
    p.add_argument("--specs", default=None, help="comma-separated specs; default: every spec that runs here")
    p.add_argument("--no-peers", action="store_true", help="leave out numpy and TensorFlow's all-reduces")
    p.add_argument("--peers", default=None, help="comma-separated peer names to keep (default: all)")
    p.add_argument(
        "--workload", choices=WORKLOADS, default="sweep", help="default sweep (one tensor per size)"
    )
    p.add_argument(
        "--min-bytes", type=_positive, default=None, help="sweep start per device (1K; accepts K/M/G)"
    )
    p.add_argument(
        "--max-bytes", type=_positive, default=None, help="sweep end per device (128M; --quick 16M)"
    )
    p.add_argument("--factor", type=_positive, default=None, help="sweep step factor (2; --quick 16)")
    p.add_argument("--dtype", choices=tuple(DTYPE_SIZES), default="float32")
    p.add_argument(
        "--warmup", type=_non_negative, default=None, help="untimed steps per contender (3; --quick 2)"
    )
    p.add_argument("--iters", type=_positive, default=None, help="timed steps per contender (10; --quick 5)")
    p.add_argument("--model", default="ResNet50", help="tf.keras.applications model of --workload model")
    p.add_argument("--small-tensors", type=_positive, default=200, help="tensors of --workload many-small")
    p.add_argument("--small-elements", type=_positive, default=1000, help="elements per many-small tensor")
    p.add_argument(
        "--pack-max-bytes",
        type=_non_negative,
        default=None,
        help="batch_all_reduce packing: largest tensor packed, 0 for none (batch workloads: 64K)",
    )
    p.add_argument(
        "--pack-max-group",
        type=_positive,
        default=None,
        help="batch_all_reduce packing: tensors per pack (256)",
    )
    p.add_argument(
        "--workers", type=_positive, default=None, help="run across a local cluster of W processes"
    )
    p.add_argument(
        "--op-timeout", type=float, default=120.0, help="seconds a cluster op may take (--workers)"
    )
    p.add_argument(
        "--allocator",
        choices=("bfc", "system"),
        default="bfc",
        help="TensorFlow's CPU allocator: bfc (default) reuses memory, system returns it to the OS",
    )
    p.add_argument(
        "--json", metavar="PATH", default=None, help="write every sample and the machine info as JSON"
    )
    p.add_argument("--plot", metavar="PATH", default=None, help="write a PNG of busbw against size")
    p.add_argument("--quick", action="store_true", help="1K..16M by x16, 2 warm-up and 5 timed steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging details to stderr")
    return p


def _resolve_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    batch = args.workload != "sweep"
    if args.pack_max_bytes is None:
        args.pack_max_bytes = BATCH_PACKING["pack_max_bytes"] if batch else 0
    if args.pack_max_group is None:
        args.pack_max_group = BATCH_PACKING["pack_max_group"] if batch else 10
    if args.min_bytes > args.max_bytes:
        parser.error(f"--min-bytes ({args.min_bytes}) exceeds --max-bytes ({args.max_bytes})")
    if args.factor < 2:
        parser.error(f"--factor must be at least 2, got {args.factor}")
    total = args.devices * (args.workers or 1)
    limit = max_exact_devices(args.dtype)
    if total > limit:
        parser.error(f"{total} devices: sums in {args.dtype} are exact for at most {limit} devices")
    if args.specs is not None:
        specs = [s.strip() for s in args.specs.split(",") if s.strip()]
        if not specs:
            parser.error("--specs is empty")
        for spec in specs:
            try:
                parse_all_reduce_spec(spec)
            except ValueError as err:
                parser.error(f"--specs: {err}")
        args.specs = specs


def _local_devices(count: int, device_type: str) -> list[str]:
    """``count`` full device names, split from one CPU or GPU where still possible."""
    from allreduce.local_devices import logical_devices

    memory = int(os.environ.get("ALLREDUCE_BENCH_GPU_MEMORY_MB", "4096"))
    try:
        return logical_devices(count, device_type, gpu_memory_mb=memory)
    except RuntimeError as err:
        raise RuntimeError(f"--devices {count}: {err}") from None


def _model_shapes(name: str) -> list[tuple[int, ...]]:
    from allreduce._tf import tf

    try:
        builder = getattr(tf.keras.applications, name)
    except AttributeError:
        raise ValueError(f"--model {name!r} is not in tf.keras.applications") from None
    model = builder(weights=None)
    shapes = [tuple(int(d) for d in w.shape) for w in model.trainable_weights]
    del model
    return shapes


def _cases(args: argparse.Namespace) -> list[Case]:
    if args.workload == "sweep":
        return sweep_cases(args.min_bytes, args.max_bytes, args.factor, args.dtype)
    if args.workload == "many-small":
        return [many_small_case(args.dtype, args.small_tensors, args.small_elements)]
    return [shapes_case(args.model, _model_shapes(args.model), args.dtype)]


def _contenders(args: argparse.Namespace, setup: Setup) -> list[Contender]:
    specs = args.specs or default_specs(setup.device_type, setup.num_devices)
    contenders: list[Contender] = [SpecContender(spec) for spec in specs]
    if not args.no_peers:
        from allreduce.bench.peers import default_peers

        peers = default_peers(setup)
        if args.peers is not None:
            wanted = {name.strip() for name in args.peers.split(",") if name.strip()}
            unknown = wanted - {p.name for p in peers}
            if unknown:
                known = ", ".join(p.name for p in peers)
                raise RuntimeError(f"--peers: unknown {', '.join(sorted(unknown))}; known: {known}")
            peers = [p for p in peers if p.name in wanted]
        contenders += peers
    return contenders


def _progress(total: int, disable: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the bench and test extras
        return None
    return tqdm(total=total, file=sys.stderr, unit="step", leave=False, disable=True if disable else None)


def _enter_devices(args: argparse.Namespace, stack: ExitStack) -> tuple[list[str], int, Any]:
    """The devices, the number of workers, and how to call a step (a cluster's watchdog)."""
    device_type = args.device_type.upper()
    if args.workers is None:
        return _local_devices(args.devices, device_type), 1, lambda fn: fn()
    if device_type != "CPU":
        raise RuntimeError("--workers starts CPU workers: use it with --device-type cpu")
    try:
        from allreduce.cluster import local_cluster
    except ImportError as err:
        raise RuntimeError(
            f"--workers needs allreduce.cluster.local_cluster, which cannot be imported here ({err})"
        ) from None
    cluster = stack.enter_context(local_cluster(args.workers, args.devices, op_timeout_s=args.op_timeout))
    return [d for worker in cluster.devices for d in worker], args.workers, cluster.run


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark the parsed options describe; returns the exit status."""
    from allreduce._tf import tf
    from allreduce.bench.driver import Result, run_case
    from allreduce.bench.report import format_summary, format_table, to_json

    tf.get_logger().setLevel("ERROR")
    results: list[Result] = []
    with ExitStack() as stack:
        devices, workers, guard = _enter_devices(args, stack)
        setup = Setup(
            devices=tuple(devices),
            device_type=args.device_type.upper(),
            workers=workers,
            pack_max_bytes=args.pack_max_bytes,
            pack_max_group=args.pack_max_group,
            witness=workers > 1 or args.device_type != "cpu",
        )
        cases = _cases(args)
        contenders = _contenders(args, setup)
        title = (
            f"allreduce-bench: {len(devices)} x {setup.device_type}"
            f"{f' over {workers} workers' if workers > 1 else ''}, {args.workload}, {args.dtype}, "
            f"warmup {args.warmup}, iters {args.iters}, allocator {args.allocator}, "
            f"TensorFlow {tf.__version__}"
            f"{'; timed steps return one element per output' if setup.witness else ''}"
        )
        sys.stderr.write(f"# {title}\n")
        bar = _progress(len(cases) * len(contenders) * (1 + args.warmup + args.iters), args.no_progress)
        tick = bar.update if bar is not None else (lambda _: None)
        try:
            for case in cases:
                if bar is not None:
                    bar.set_description(case.name)
                results += run_case(
                    case, contenders, setup, warmup=args.warmup, iters=args.iters, tick=tick, guard=guard
                )
        finally:
            if bar is not None:
                bar.close()
    sys.stdout.write(format_table(results, title=title) + "\n")
    sys.stdout.write(format_summary(results) + "\n")
    sys.stdout.flush()
    if args.json:
        document = to_json(results, options=_options(args), devices=devices)
        _parent(args.json)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    if args.plot:
        from allreduce.bench.plot import plot_busbw

        _parent(args.plot)
        plot_busbw(results, args.plot, title=title)
    return 0 if all(r.ok for r in results) else 1


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}


def _parent(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``allreduce-bench`` and ``python -m allreduce.bench``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_options(args, parser)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    # TensorFlow's default CPU allocator hands large buffers back to the OS, so every
    # 100 MB output costs ~25k page faults; BFC keeps them (numpy's floor preallocates).
    # Read when the runtime makes its first CPU buffer: no effect on a started runtime.
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true" if args.allocator == "bfc" else "false"
    try:
        return run(args)
    except RuntimeError as err:
        sys.stderr.write(f"allreduce-bench: error: {err}\n")
        return 2
