"""What every builder shares: the build context, dispatch and copies between devices."""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from allreduce.core._tf import tf
from allreduce.graph.wire import PLAIN, Packet, Wire
from allreduce.planning.algorithms.base import CPU, AlgorithmInfo
from allreduce.planning.devices import other_cpu_of_worker, parse_device_name, shares_memory
from allreduce.planning.schedules import ALIGN_BYTES, HOP_MIN_BYTES, aligned_split_sizes, halves_hosts

__all__ = [
    "ALIGN_BYTES",
    "BUILDERS",
    "HIERARCHICAL",
    "HOP_MIN_BYTES",
    "BuildContext",
    "Builders",
    "builder_of",
    "aligned_split_sizes",
    "broadcast",
    "concat_1d",
    "concat_each",
    "concat_on",
    "constant_on",
    "forward",
    "graph_cached",
    "reduce_to_one",
    "reducer_of",
    "run_all_reduce",
    "shares_memory",
    "split_1d",
    "split_on",
    "sum_on",
]


class Builders(NamedTuple):
    """A built-in algorithm's graph functions: its all-reduce and, if it has one, its reducer."""

    all_reduce: Callable[..., Any]
    reduce: Callable[..., Any] | None = None


#: The key of the builder every hierarchical ``A/B`` shares in :data:`BUILDERS`.
HIERARCHICAL = "A/B"

#: Each built-in algorithm's :class:`Builders`, by the name its declaration gives; the
#: package ``allreduce.graph.algorithms`` fills it in when it is first imported.
BUILDERS: dict[str, Builders] = {}


def _bound(info: AlgorithmInfo) -> Builders:
    key = HIERARCHICAL if info.levels else info.name
    if key not in BUILDERS:
        raise ValueError(
            f"algorithm {info.name!r} has no builder: give one to its AlgorithmInfo, or bind "
            "its name in allreduce.graph.algorithms"
        )
    return BUILDERS[key]


def builder_of(info: AlgorithmInfo) -> Callable[..., Any]:
    """The function that builds ``info``: its own (registered at run time) or the bound one.

    Raises:
        ValueError: it has none.
    """
    return info.builder if callable(info.builder) else _bound(info).all_reduce


def reducer_of(info: AlgorithmInfo) -> Callable[..., Any] | None:
    """The function that leaves ``info``'s sum on one device, or ``None`` if it has none.

    Raises:
        ValueError: it declares a reducer and none is bound to its name.
    """
    if not info.reducer:
        return None
    if callable(info.reducer):
        return info.reducer
    return _bound(info).reduce


@dataclass(frozen=True)
class BuildContext:
    """Options of one all-reduce, passed to every builder.

    Attributes:
        info: the algorithm being built.
        shards: the spec's ``#k`` (1 when absent).
        tensor_index: the position of this tensor among those the same spec range
            reduces in one batch; algorithms that pick devices round-robin use it.
        worker_groups: input indices grouped by worker, for hierarchical algorithms;
            ``None`` groups by the ``/job/replica/task`` of the device names.
        timeout_s: the most seconds a collective may wait for its peers (0: no limit).
        wire: how values cross devices (:class:`allreduce.graph.wire.Wire`); every hop of a
            builder goes through it.
    """

    info: AlgorithmInfo
    shards: int = 1
    tensor_index: int = 0
    worker_groups: tuple[tuple[int, ...], ...] | None = None
    timeout_s: float = 0.0
    wire: Wire = PLAIN

    def for_algorithm(self, info: AlgorithmInfo, shards: int = 1) -> BuildContext:
        """The same context for a level of a hierarchical algorithm."""
        return replace(self, info=info, shards=shards, worker_groups=None)


def run_all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Runs ``ctx.info``'s builder; a single input is its own result.

    Raises:
        ValueError: the algorithm cannot run on these devices with this shard count.
    """
    problem = _problem(ctx.info, tuple(devices), ctx.shards, ctx.worker_groups)
    if problem is not None:
        raise ValueError(problem)
    if len(values) == 1:
        return [values[0]]
    results = list(builder_of(ctx.info)(list(values), list(devices), ctx))
    if len(results) != len(values) or any(r is None for r in results):
        raise RuntimeError(f"{ctx.info.name} returned {len(results)} results for {len(values)} inputs")
    return results


@functools.lru_cache(maxsize=1024)
def _problem(
    info: AlgorithmInfo, devices: tuple[str, ...], shards: int, groups: tuple[tuple[int, ...], ...] | None
) -> str | None:
    # The same devices and spec recur for every tensor of a batch.
    return info.problem(devices, shards, groups)


def reduce_to_one(
    values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext
) -> tuple[tf.Tensor, str]:
    """Leaves the sum of ``values`` on one device, with the algorithm's reducer if it
    has one, else with its all-reduce (keeping the first device's result)."""
    if len(values) == 1:
        return values[0], devices[0]
    reducer = reducer_of(ctx.info)
    if reducer is not None:
        return reducer(list(values), list(devices), ctx)
    return run_all_reduce(values, devices, ctx)[0], devices[0]


def forward(packet: Packet, device: str) -> Packet:
    """A copy of ``packet`` on ``device`` (one hop of a final value)."""
    with tf.device(device):
        return packet._replace(tensor=tf.identity(packet.tensor), device=device)


def broadcast(value: tf.Tensor, src: str, devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """The final ``value`` (on ``src``) on each of ``devices``, bitwise identical.

    ``src`` keeps ``value`` itself unless the wire transforms a hop, in which case it
    decodes the same packet as everyone else.
    """
    packet = ctx.wire.publish(value, src, devices)
    return [ctx.wire.open(packet, d) for d in devices]


_graph_lock = threading.Lock()
#: Per graph, the names of the tensors :func:`graph_cached` made. Names, not tensors: a
#: tensor holds its graph, and would keep this weak table's key alive for good.
_by_graph: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def graph_cached(key: Hashable, make: Callable[[], tf.Tensor]) -> tf.Tensor:
    """The tensor ``make()`` returned for ``key`` in the current graph, made once per graph."""
    graph = tf.compat.v1.get_default_graph()
    with _graph_lock:
        names = _by_graph.setdefault(graph, {})
        name = names.get(key)
    if name is not None:
        return graph.get_tensor_by_name(name)
    tensor = make()
    with _graph_lock:
        name = names.setdefault(key, tensor.name)
    return graph.get_tensor_by_name(name)


def constant_on(value: int | tuple[int, ...], device: str) -> tf.Tensor:
    """An int32 constant on ``device``, made once per graph: split sizes and axes recur
    for every tensor of a batch, and each new ``Const`` is one more op to trace.

    Made outside any control dependency or control-flow context, so that sharing it
    adds no edge between the ops that use it.
    """

    def make() -> tf.Tensor:
        with tf.control_dependencies(None), tf.device(device):
            return tf.constant(value, dtype=tf.int32)

    return graph_cached(("constant", device, value), make)


def split_1d(value: tf.Tensor, device: str, sizes: Sequence[int]) -> list[tf.Tensor]:
    """One ``SplitV`` of a 1-D (or row-major 2-D) tensor along axis 0, on ``device``."""
    with tf.device(device):
        return tf.raw_ops.SplitV(
            value=value,
            size_splits=constant_on(tuple(sizes), device),
            axis=constant_on(0, device),
            num_split=len(sizes),
        )


def concat_1d(pieces: Sequence[tf.Tensor], device: str) -> tf.Tensor:
    """One ``ConcatV2`` of 1-D pieces along axis 0, on ``device``."""
    with tf.device(device):
        return tf.raw_ops.ConcatV2(values=list(pieces), axis=constant_on(0, device))


def split_on(value: tf.Tensor, device: str, sizes: Sequence[int]) -> list[tf.Tensor]:
    """Splits a 1-D tensor into pieces of the given sizes, on ``device``.

    A 1-D ``Split`` always copies; when every size is a multiple of
    :data:`ALIGN_BYTES`, splitting the rows of a 2-D view instead shares the buffer.
    """
    if len(sizes) == 1:
        return [value]
    granule = max(1, ALIGN_BYTES // value.dtype.size)
    if granule > 1 and all(size % granule == 0 for size in sizes):
        with tf.device(device):
            rows = tf.reshape(value, constant_on((-1, granule), device))
        parts = split_1d(rows, device, [size // granule for size in sizes])
        with tf.device(device):
            return [tf.reshape(part, constant_on((-1,), device)) for part in parts]
    return split_1d(value, device, sizes)


def concat_on(pieces: Sequence[tf.Tensor], device: str) -> tf.Tensor:
    """Concatenates 1-D pieces on ``device`` (a single piece is copied there)."""
    if len(pieces) == 1:
        with tf.device(device):
            return tf.identity(pieces[0])
    return concat_1d(pieces, device)


def concat_each(
    packets: Sequence[Sequence[Packet]], devices: Sequence[str], ctx: BuildContext
) -> list[tf.Tensor]:
    """The concatenation of ``packets[i]``, opened on ``devices[i]``, for each ``i``,
    where every ``packets[i]`` carries the same values.

    CPUs of one worker share memory, so the first CPU of each worker concatenates once
    and the others take a copy of its result, which moves no bytes; other devices each
    concatenate their own pieces. A single piece is opened on each device (no op where
    it already sits there).
    """
    if all(len(pieces) == 1 for pieces in packets):
        return [ctx.wire.open(pieces[0], device) for pieces, device in zip(packets, devices)]
    out: list[tf.Tensor] = []
    first: dict[tuple[str, int, int], int] = {}
    for i, device in enumerate(devices):
        parsed = parse_device_name(device)
        j = first.setdefault(parsed.worker, i) if parsed.device_type == CPU else i
        if j != i:
            with tf.device(device):
                out.append(tf.identity(out[j]))
            continue
        pieces = packets[i]
        if all(p.encoded for p in pieces):
            # Decode once: the wire format is elementwise, so it commutes with concat.
            joined = concat_1d([p.tensor for p in pieces], device)
            out.append(ctx.wire.open(pieces[0]._replace(tensor=joined, device=device), device))
            continue
        opened = [ctx.wire.open(p, p.device) if p.encoded else p.tensor for p in pieces]
        out.append(concat_1d(opened, device))
    return out


def sum_on(
    values: Sequence[tf.Tensor], value_devices: Sequence[str], device: str, ctx: BuildContext
) -> tf.Tensor:
    """``tf.add_n(values)`` on ``device``; ``value_devices[i]`` is where ``values[i]`` sits.

    Each value arrives through the wire (:meth:`allreduce.graph.wire.Wire.receive`).

    Grappler's memory optimizer rewrites an ``AddN`` of more than two inputs, one of
    them on the ``AddN``'s own device, into a zeroed temporary variable and one
    ``AssignAdd`` per input once the device's estimated peak memory passes 80 % of the
    256 MiB it assumes for a CPU: 2-3x slower for tensors of tens of MB. On a CPU, an
    input on the summing device is therefore first handed to another CPU of the same
    worker through a no-op (``EnsureShape``, which Grappler keeps); CPUs of one process
    share memory, so that moves no bytes. The sum and its bits are unchanged. Below
    :data:`HOP_MIN_BYTES` a rewrite costs little and the extra op would cost more.

    Where :func:`allreduce.planning.schedules.halves_hosts` says so (CPUs of one worker, a sum of
    a few hundred KiB per value) and the wire transforms no hop, two halves of the values
    are summed side by side on two other CPUs and ``device`` adds the two partial sums:
    one ``add_n`` of that size would be split by Eigen over two threads, which costs
    more than the work it shares.
    """
    halves = _sum_in_halves(values, value_devices, device, ctx)
    if halves is not None:
        return halves
    values = [ctx.wire.receive(v, src, device) for v, src in zip(values, value_devices)]
    target = parse_device_name(device)
    size = values[0].shape.num_elements() or 0
    large = len(values) > 2 and size * values[0].dtype.size >= HOP_MIN_BYTES
    hop = other_cpu_of_worker(device, value_devices) if large else None
    if hop is not None:
        for i, (value, where) in enumerate(zip(values, value_devices)):
            # A value the wire transformed was decoded on the summing device too.
            if parse_device_name(where) == target or ctx.wire.crosses(where, device):
                with tf.device(hop):
                    values[i] = tf.ensure_shape(value, value.shape)
    with tf.device(device):
        return tf.add_n(values)


def _sum_in_halves(
    values: Sequence[tf.Tensor], value_devices: Sequence[str], device: str, ctx: BuildContext
) -> tf.Tensor | None:
    """The sum of ``values`` as two half sums added on ``device``, or ``None`` where
    :func:`allreduce.planning.schedules.halves_hosts` finds no hosts or the wire transforms a hop."""
    size = values[0].shape.num_elements()
    if size is None:
        return None
    hosts = halves_hosts(value_devices, device, size * values[0].dtype.size)
    places = [*value_devices, device]
    if hosts is None or any(ctx.wire.crosses(a, b) for a in places for b in places if a != b):
        return None
    half = len(values) // 2
    partial = []
    for host, members in zip(hosts, (values[:half], values[half:])):
        with tf.device(host):
            partial.append(tf.add_n(list(members)))
    with tf.device(device):
        return tf.add_n(partial)
