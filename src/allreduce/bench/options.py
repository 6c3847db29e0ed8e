"""What a benchmark run is asked to do: one typed object with every default in one place.

Pure Python: building and checking :class:`Options` imports neither TensorFlow nor
matplotlib, so every mistake these checks find is reported before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from allreduce.cluster.cluster_spec import check_cluster_spec, parse_json_spec, parse_tf_config
from allreduce.cluster.connection import CLIENT_JOB, client_address
from allreduce.core.validation import check_ray_address
from allreduce.measure.cases import Case, many_small_case, max_exact_devices, sweep_cases
from allreduce.measure.contenders import LIBRARY_PACK_MAX_GROUP

__all__ = [
    "ALLOCATORS",
    "BATCH_PACKING",
    "DEVICE_TYPES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "FULL",
    "NO_PACKING",
    "QUICK",
    "TF_CONFIG",
    "WORKLOADS",
    "Options",
    "Packing",
    "Sweep",
    "UsageError",
    "RAY_LOCAL",
    "connect_spec",
    "resolve_options",
]

WORKLOADS = ("sweep", "many-small", "model")
DEVICE_TYPES = ("cpu", "gpu")
ALLOCATORS = ("bfc", "system")
#: ``--ray`` without an address: a Ray this process starts (or one it joined already).
RAY_LOCAL = "local"
#: ``--connect`` without a spec: the cluster of ``TF_CONFIG``.
TF_CONFIG = "tf_config"


#: Exit statuses of the command.
EXIT_OK = 0
#: A wrong result, a failing contender, or one that had to run and did not.
EXIT_FAILED = 1
#: A :class:`UsageError`: nothing was measured.
EXIT_USAGE = 2
#: 128 + SIGINT, what a shell reports for a command stopped with Ctrl-C.
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Options that cannot run: the command exits with :data:`EXIT_USAGE` before measuring."""


@dataclass(frozen=True)
class Sweep:
    """The size sweep and step counts of a full or a quick run."""

    min_bytes: int
    max_bytes: int
    factor: int
    warmup: int
    iters: int


FULL = Sweep(min_bytes=1 << 10, max_bytes=128 << 20, factor=2, warmup=3, iters=10)
QUICK = Sweep(min_bytes=1 << 10, max_bytes=16 << 20, factor=16, warmup=2, iters=5)


@dataclass(frozen=True)
class Packing:
    """``batch_all_reduce``'s packing: largest tensor packed (0: none), tensors per pack."""

    max_bytes: int
    max_group: int


#: Batch workloads pack small tensors by default; a single tensor has nothing to pack.
BATCH_PACKING = Packing(max_bytes=64 << 10, max_group=256)
NO_PACKING = Packing(max_bytes=0, max_group=LIBRARY_PACK_MAX_GROUP)


@dataclass(frozen=True)
class Options:
    """Every option of ``allreduce-bench``, with its default.

    ``specs`` is ``None`` for every spec that runs here; ``peers`` is ``None`` for every
    peer, a tuple for the named ones (``()``: none). The sweep fields default to
    :data:`FULL`, the packing fields to :data:`NO_PACKING`; :func:`resolve_options`
    picks :data:`QUICK` and :data:`BATCH_PACKING` where they apply.
    """

    devices: int = 4
    device_type: str = "cpu"
    specs: tuple[str, ...] | None = None
    peers: tuple[str, ...] | None = None
    workload: str = "sweep"
    dtype: str = "float32"
    min_bytes: int = FULL.min_bytes
    max_bytes: int = FULL.max_bytes
    factor: int = FULL.factor
    warmup: int = FULL.warmup
    iters: int = FULL.iters
    model: str = "ResNet50"
    small_tensors: int = 200
    small_elements: int = 1000
    pack_max_bytes: int = NO_PACKING.max_bytes
    pack_max_group: int = NO_PACKING.max_group
    workers: int | None = None
    connect: str | None = None
    ray: str | None = None
    spmd: bool = False
    compression: tuple[str, ...] = ("none",)
    op_timeout: float = 120.0
    allocator: str = "bfc"
    json: str | None = None
    plot: str | None = None
    quick: bool = False
    progress: bool = True
    verbose: int = 0
    tune: bool = False
    tune_budget: float = 60.0
    retune: bool = False
    explain: bool = False

    @property
    def total_devices(self) -> int:
        """Devices over all workers."""
        return self.devices * (self.workers or 1)

    @property
    def named_peers(self) -> bool:
        """Whether the peers were chosen by name (each must then run)."""
        return self.peers is not None

    def cases(self) -> list[Case]:
        """The cases of a sweep or many-small workload (a model's needs TensorFlow).

        Raises:
            UsageError: no size of the sweep holds one element.
        """
        try:
            if self.workload == "sweep":
                return sweep_cases(self.min_bytes, self.max_bytes, self.factor, self.dtype)
            if self.workload == "many-small":
                return [many_small_case(self.dtype, self.small_tensors, self.small_elements)]
        except ValueError as err:
            raise UsageError(str(err)) from None
        raise UsageError(f"the cases of --workload {self.workload} are not known before TensorFlow starts")

    def as_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def resolve_options(given: Mapping[str, Any]) -> Options:
    """The options of a run from the ones given on the command line.

    Fields not in ``given`` take :data:`QUICK`'s values with ``quick``, else
    :data:`FULL`'s, and the packing of the workload.

    Raises:
        UsageError: options that contradict each other or cannot run.
    """
    sweep = QUICK if given.get("quick") else FULL
    packing = NO_PACKING if given.get("workload", "sweep") == "sweep" else BATCH_PACKING
    defaults = {
        "min_bytes": sweep.min_bytes,
        "max_bytes": sweep.max_bytes,
        "factor": sweep.factor,
        "warmup": sweep.warmup,
        "iters": sweep.iters,
        "pack_max_bytes": packing.max_bytes,
        "pack_max_group": packing.max_group,
    }
    options = Options(**{**defaults, **given})
    _check(options, given)
    return options


def _check(options: Options, given: Mapping[str, Any]) -> None:
    if "model" in given and options.workload != "model":
        raise UsageError(
            f"--model {options.model} needs --workload model (the workload is {options.workload})"
        )
    if options.retune and not options.tune:
        raise UsageError("--retune measures a tuning again: use it with --tune")
    if options.min_bytes > options.max_bytes:
        raise UsageError(f"--min-bytes ({options.min_bytes}) exceeds --max-bytes ({options.max_bytes})")
    _check_peers(options)
    if options.spmd:
        _check_spmd(options)
    if options.ray is not None:
        _check_ray(options, given)
    if options.connect is not None:
        _check_connect(options, given)
    if options.workers is not None and options.device_type != "cpu":
        raise UsageError("--workers starts CPU workers: use it with --device-type cpu")
    limit = max_exact_devices(options.dtype, rounding=options.compression != ("none",))
    if options.connect is None and options.total_devices > limit:
        raise UsageError(
            f"{options.total_devices} devices: sums in {options.dtype} are exact for at most {limit} devices"
        )
    if options.workload != "model":
        options.cases()


def connect_spec(text: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The cluster spec of ``--connect``: ``text`` as JSON, or the cluster of ``TF_CONFIG``
    when ``text`` is ``"tf_config"``.

    Raises:
        UsageError: not JSON, no ``TF_CONFIG``, or a spec ``connect`` would refuse (also
            workers on other hosts and no ``localhost`` address of this process).
    """
    environ = os.environ if environ is None else environ
    try:
        if text == TF_CONFIG:
            if "TF_CONFIG" not in environ:
                raise UsageError("--connect without a spec reads TF_CONFIG, which is not set")
            raw = parse_tf_config(environ["TF_CONFIG"])[0]
        else:
            raw = parse_json_spec(text, "--connect")
        jobs, client = check_cluster_spec(raw, "worker", CLIENT_JOB)
        client_address([a for tasks in jobs.values() for a in tasks], client)
    except UsageError:
        raise
    except (TypeError, ValueError) as err:
        raise UsageError(f"--connect: {err}") from None
    return raw


def _check_ray(options: Options, given: Mapping[str, Any]) -> None:
    if options.connect is not None:
        raise UsageError("--ray does not go with --connect: choose one cluster")
    if "workers" not in given:
        raise UsageError("--ray needs --workers N: the number of Ray actors, each a worker")
    if options.ray != RAY_LOCAL:
        try:
            check_ray_address(options.ray)
        except (TypeError, ValueError) as err:
            raise UsageError(f"--ray: {err}") from None


def _check_connect(options: Options, given: Mapping[str, Any]) -> None:
    for option in ("workers", "devices"):
        if option in given:
            raise UsageError(
                f"--{option} does not go with --connect: the cluster spec names the workers, and "
                "each worker's devices are those it serves (allreduce-worker --devices N or --gpus)"
            )
    connect_spec(options.connect)


def _check_peers(options: Options) -> None:
    from allreduce.measure.spmd_driver import PEER_NAME

    if options.spmd and options.peers and set(options.peers) != {PEER_NAME}:
        raise UsageError(f"--peers: with --spmd the one peer is {PEER_NAME} (or --no-peers)")
    if not options.spmd and options.peers and PEER_NAME in options.peers:
        raise UsageError(f"--peers {PEER_NAME} is the peer of --spmd: use it with --spmd")


def _check_spmd(options: Options) -> None:
    """``--spmd``: local worker processes, specs that run in SPMD mode, exact sums (the
    SPMD sweep does not measure compression)."""
    for other in ("connect", "ray"):
        if getattr(options, other) is not None:
            raise UsageError(f"--spmd does not go with --{other}: it starts its own local worker processes")
    if options.workers is None or options.workers < 2:
        raise UsageError("--spmd needs --workers N with N >= 2 (one process per worker)")
    if options.workload == "model":
        raise UsageError("--spmd measures --workload sweep or many-small, not model")
    if options.compression != ("none",):
        raise UsageError(
            "--compression does not go with --spmd: the SPMD sweep measures exact sums only "
            "(spmd.all_reduce(compression=...) compresses, see docs/compression.md)"
        )
    if options.explain:
        raise UsageError("--explain does not go with --spmd: its plans are those of the one-client mode")
    from allreduce.planning.spec import parse_all_reduce_spec
    from allreduce.selection.auto import is_auto
    from allreduce.spmd.specs import check_spmd_spec

    for spec in options.specs or ():
        if not is_auto(spec):
            try:
                parsed = parse_all_reduce_spec(spec)
                check_spmd_spec(parsed)
            except ValueError as err:
                raise UsageError(f"--specs: {err}") from None
            if any(p.compression is not None for p in parsed):
                raise UsageError(f"--specs {spec}: the SPMD sweep measures exact sums only, not @wire")
