"""``allreduce-bench``: all-reduce bandwidth and correctness, in the style of nccl-tests.

Run ``allreduce-bench --help`` for the options. Exit status: 0 when every contender
that had to run ran and every result was exact on every device; 1 when a result was
wrong, a contender failed, or a contender asked for (or a default spec) did not run;
2 on a usage error, found before anything is measured; 130 after Ctrl-C.
``--help``, ``--version``, ``--list-specs`` and every usage error except an unknown
``--model`` work without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from allreduce.bench.options import (
    ALLOCATORS,
    BATCH_PACKING,
    DEVICE_TYPES,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    FULL,
    QUICK,
    RAY_LOCAL,
    TF_CONFIG,
    WORKLOADS,
    Options,
    UsageError,
    resolve_options,
)
from allreduce.core.tables import DTYPE_SIZES
from allreduce.measure.cases import Case
from allreduce.measure.cases import format_bytes as _bytes
from allreduce.planning.spec import parse_all_reduce_spec, parse_general_int
from allreduce.selection.auto import is_auto

__all__ = ["build_parser", "main"]

PROG = "allreduce-bench"


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as :class:`UsageError` (one line, no usage text, no exit)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        # A minus sign is a value out of range, not a malformed number.
        digits = text.strip()
        sign = -1 if digits.startswith("-") else 1
        try:
            value = sign * parse_general_int(digits.removeprefix("-"))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum}, got {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _names(text: str) -> tuple[str, ...]:
    items = [n.strip() for n in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r} (an empty name)")
    return tuple(dict.fromkeys(items))


def _specs(text: str) -> tuple[str, ...]:
    specs = _names(text)
    for spec in specs:
        if is_auto(spec):  # the tuned spec, resolved per case (docs/tuning.md)
            continue
        try:
            parse_all_reduce_spec(spec)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return specs


def _unknown(what: str, unknown: list[str], known: Sequence[str]) -> str:
    names = ", ".join(repr(n) for n in unknown)
    return f"unknown {what}{'s' if len(unknown) > 1 else ''} {names}; known: {', '.join(known)}"


def _compressions(text: str) -> tuple[str, ...]:
    from allreduce.measure.contenders import COMPRESSIONS

    names = _names(text)
    unknown = [n for n in names if n not in COMPRESSIONS]
    if unknown:
        raise argparse.ArgumentTypeError(_unknown("compression", unknown, COMPRESSIONS))
    return names


def _peers(text: str) -> tuple[str, ...]:
    from allreduce.measure.peers import peer_names
    from allreduce.measure.spmd_driver import PEER_NAME

    names, known = _names(text), [*peer_names(), PEER_NAME]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(_unknown("peer", unknown, known))
    return names


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("allreduce")
    except PackageNotFoundError:
        from allreduce import __version__

        return __version__


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        sys.stdout.write(f"{PROG} {_version()}\n")
        parser.exit()


class _ListSpecs(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        from allreduce.measure.catalog import format_spec_list

        sys.stdout.write(format_spec_list() + "\n")
        parser.exit()


def _add_what(p: argparse.ArgumentParser, d: Options) -> None:
    """Options that choose the devices, the contenders and the workload."""
    p.add_argument(
        "--devices", type=_integer(1), help=f"devices (per worker with --workers); default {d.devices}"
    )
    p.add_argument("--device-type", choices=DEVICE_TYPES, help=f"default {d.device_type} (logical CPUs)")
    p.add_argument("--specs", type=_specs, help="comma-separated specs; default: every spec that runs here")
    peers = p.add_mutually_exclusive_group()
    peers.add_argument(
        "--no-peers", dest="peers", action="store_const", const=(), help="leave out numpy and TensorFlow"
    )
    peers.add_argument("--peers", type=_peers, help="comma-separated peer names to keep (default: all)")
    p.add_argument("--workload", choices=WORKLOADS, help=f"default {d.workload} (one tensor per size)")
    p.add_argument("--dtype", choices=tuple(DTYPE_SIZES), help=f"default {d.dtype}")
    p.add_argument("--model", help=f"tf.keras.applications model of --workload model ({d.model})")
    p.add_argument(
        "--small-tensors", type=_integer(1), help=f"tensors of --workload many-small ({d.small_tensors})"
    )
    p.add_argument(
        "--small-elements", type=_integer(1), help=f"elements per many-small tensor ({d.small_elements})"
    )
    p.add_argument("--workers", type=_integer(1), help="run across a local cluster of W processes")
    p.add_argument(
        "--connect",
        nargs="?",
        const=TF_CONFIG,
        metavar="SPEC",
        help="run across servers started with allreduce-worker: a JSON cluster spec "
        '\'{"worker": ["host:port", ...]}\'; without SPEC, the cluster of TF_CONFIG',
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const=RAY_LOCAL,
        metavar="ADDRESS",
        help="run --workers N Ray actors with --devices K each: on a Ray cluster at ADDRESS "
        "('auto', 'ray://host:port' or 'host:port'), or without ADDRESS on a local Ray",
    )
    p.add_argument(
        "--spmd",
        action="store_true",
        help="SPMD mode: --workers N local processes with --devices K each, every one building only "
        "its own part, with TensorFlow's CollectiveReduceV2 as the peer",
    )
    p.add_argument(
        "--compression",
        type=_compressions,
        help="comma-separated wire compressions, each spec run with each: none (default), bf16, fp16, "
        "or bf16-all / fp16-all to compress hops between CPUs of one process too",
    )
    p.add_argument("--op-timeout", type=_seconds, help=f"seconds a cluster op may take ({d.op_timeout:g})")


def _add_how(p: argparse.ArgumentParser) -> None:
    """Options of the sweep, the steps, packing and the allocator."""
    p.add_argument(
        "--min-bytes", type=_integer(1), help=f"sweep start per device ({_bytes(FULL.min_bytes)}; K/M/G/T)"
    )
    p.add_argument(
        "--max-bytes",
        type=_integer(1),
        help=f"sweep end per device ({_bytes(FULL.max_bytes)}; --quick {_bytes(QUICK.max_bytes)})",
    )
    p.add_argument(
        "--factor", type=_integer(2), help=f"sweep step factor ({FULL.factor}; --quick {QUICK.factor})"
    )
    p.add_argument(
        "--warmup",
        type=_integer(0),
        help=f"untimed steps per contender ({FULL.warmup}; --quick {QUICK.warmup})",
    )
    p.add_argument(
        "--iters", type=_integer(1), help=f"timed steps per contender ({FULL.iters}; --quick {QUICK.iters})"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{_bytes(QUICK.min_bytes)}..{_bytes(QUICK.max_bytes)} by x{QUICK.factor}, "
        f"{QUICK.warmup} warm-up and {QUICK.iters} timed steps",
    )
    p.add_argument(
        "--pack-max-bytes",
        type=_integer(0),
        help=f"packing: largest tensor packed, 0: none (batch workloads: {_bytes(BATCH_PACKING.max_bytes)})",
    )
    p.add_argument(
        "--pack-max-group",
        type=_integer(1),
        help=f"packing: tensors per pack (batch workloads: {BATCH_PACKING.max_group})",
    )
    p.add_argument(
        "--allocator", choices=ALLOCATORS, help="TensorFlow's CPU allocator: bfc (default) or system"
    )


def _add_output(p: argparse.ArgumentParser) -> None:
    """Options of what is written where."""
    p.add_argument("--json", metavar="PATH", help="write every sample and the machine info as JSON")
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="draw busbw against size (.png, .svg, .pdf, ...: any matplotlib format)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    p.add_argument(
        "--tune",
        action="store_true",
        help="tune a spec for all the cases' tensors as one step (cached for spec='auto'), print the "
        "winner per size band against every single spec, and exit",
    )
    p.add_argument("--tune-budget", type=_seconds, help="seconds --tune may measure (default 60)")
    p.add_argument(
        "--retune",
        action="store_true",
        help="with --tune: measure again even where a tuning is cached, and replace it",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print each spec's plan and predicted time per case, then predicted against measured",
    )
    p.add_argument(
        "-v", "--verbose", action="count", help="log what the run does to stderr (-vv: debugging details)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``allreduce-bench``; options not given are left out of the
    namespace, so that :func:`~allreduce.bench.options.resolve_options` fills them in."""
    p = _Parser(
        prog=PROG,
        argument_default=argparse.SUPPRESS,
        description=(
            "Time all-reduce specs against numpy and TensorFlow's own all-reduces, check every "
            "result on every device, and print an nccl-tests style table. Exit status: 0 all exact, "
            "1 a wrong result, a failure or a requested contender that did not run, 2 usage error, "
            "130 interrupted."
        ),
    )
    p.add_argument("--version", action=_Version, nargs=0, help="print the installed version and exit")
    p.add_argument(
        "--list-specs", action=_ListSpecs, nargs=0, help="describe every algorithm a spec can name, and exit"
    )
    _add_what(p, Options())
    _add_how(p)
    _add_output(p)
    return p


def _prepare(argv: Sequence[str] | None) -> tuple[Options, list[Case] | None]:
    """Parses and checks everything that can be checked before TensorFlow starts.

    Raises:
        UsageError: any option that cannot run.
        SystemExit: ``--help``, ``--version`` or ``--list-specs`` did their job.
    """
    from allreduce.bench import preflight

    options = resolve_options(vars(build_parser().parse_args(argv)))
    if options.plot:
        preflight.check_plot_format(options.plot)
    for option, path in (("--json", options.json), ("--plot", options.plot)):
        if path:
            preflight.check_output(option, path)
    if options.workload == "model":
        return options, None
    cases = options.cases()
    preflight.check_memory(cases, options)
    return options, cases


@contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """With ``-v``, the package's INFO lines (``-vv``: DEBUG) on stderr."""
    if not verbosity:
        yield
        return
    package = logging.getLogger("allreduce")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = package.level
    package.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def _usage_error(err: UsageError) -> int:
    sys.stderr.write(f"{PROG}: error: {' '.join(str(err).split())} (see {PROG} --help)\n")
    return EXIT_USAGE


def _run(argv: Sequence[str] | None) -> int:
    try:
        options, cases = _prepare(argv)
    except UsageError as err:
        return _usage_error(err)
    except SystemExit as done:
        return int(done.code or 0)
    from allreduce.bench import session

    # TensorFlow's default CPU allocator hands large buffers back to the OS, so every
    # 100 MB output costs ~25k page faults; BFC keeps them (numpy's floor preallocates).
    # Read when the runtime makes its first CPU buffer: no effect on a started runtime.
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true" if options.allocator == "bfc" else "false"
    with _logging(options.verbose):
        try:
            return session.run(options, cases)
        except UsageError as err:
            return _usage_error(err)
        except RuntimeError as err:
            # The devices or the cluster asked for cannot be made here.
            sys.stderr.write(f"{PROG}: error: {err}\n")
            return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``allreduce-bench`` and ``python -m allreduce.bench``; returns the
    exit status (Ctrl-C before or between measurements: 130, without a traceback)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return EXIT_INTERRUPTED
