"""The spec-driven entry points: :func:`all_reduce` and :func:`batch_all_reduce`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from allreduce._tf import tf
from allreduce.algorithms.base import BuildContext, run_all_reduce
from allreduce.devices import parse_device_name
from allreduce.packing import (
    PACKED_VAR_PLACEHOLDER,
    pack_small_tensors,
    unpack_small_tensors,
    validate_tower_grads,
)
from allreduce.registry import get_algorithm
from allreduce.spec import (
    AllReduceSpecTuple,
    format_all_reduce_spec,
    parse_all_reduce_spec,
    select_spec_tuple,
)

__all__ = ["REDUCTIONS", "SUPPORTED_DTYPES", "all_reduce", "batch_all_reduce"]

Reduction = Literal["sum", "mean"]
REDUCTIONS = ("sum", "mean")
SUPPORTED_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)
WorkerGroups = Sequence[Sequence[int]]


def _check_reduction(reduction: str, dtype: tf.DType) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if dtype not in SUPPORTED_DTYPES:
        names = ", ".join(d.name for d in SUPPORTED_DTYPES)
        raise ValueError(f"dtype {dtype.name} cannot be all-reduced; supported: {names}")
    if reduction == "mean" and dtype.is_integer:
        raise ValueError(f"reduction='mean' needs a floating dtype, got {dtype.name}; use 'sum'")


def _resolve_devices(tensors: Sequence[tf.Tensor], devices: Sequence[str] | None, what: str) -> list[str]:
    if devices is not None:
        if isinstance(devices, str) or len(devices) != len(tensors):
            raise ValueError(f"devices must list one device per {what}: {len(tensors)}, got {devices!r}")
        names = list(devices)
    else:
        names = [t.device for t in tensors]
        for i, name in enumerate(names):
            if not name:
                raise ValueError(f"{what} {i} has no device (a tf.function argument?); pass devices=[...]")
    for name in names:
        parse_device_name(name)
    return names


def _check_devices(info_name: str, devices: Sequence[str]) -> None:
    info = get_algorithm(info_name)
    for device in devices:
        kind = parse_device_name(device).device_type
        if kind not in info.device_types:
            hint = " (try 'xring', 'rechd' or 'pscpu' on CPUs)" if kind == "CPU" else ""
            raise ValueError(
                f"algorithm {info_name!r} runs on {'/'.join(sorted(info.device_types))} devices "
                f"only, but an input is on {device!r}{hint}"
            )


def _check_worker_groups(groups: WorkerGroups | None, n: int) -> tuple[tuple[int, ...], ...] | None:
    if groups is None:
        return None
    result = tuple(tuple(int(i) for i in g) for g in groups)
    flat = sorted(i for g in result for i in g)
    if flat != list(range(n)) or any(not g for g in result):
        raise ValueError(
            f"worker_groups must split the indices 0..{n - 1} into non-empty groups, got {groups!r}"
        )
    return result


def _parse(spec: str | Sequence[AllReduceSpecTuple]) -> list[AllReduceSpecTuple]:
    if isinstance(spec, str):
        return parse_all_reduce_spec(spec)
    if not isinstance(spec, Sequence):
        raise TypeError(f"spec must be a str or a list of AllReduceSpecTuple, got {type(spec).__name__}")
    # Formatting validates the tuples with the parser's rules.
    return parse_all_reduce_spec(format_all_reduce_spec(spec))


def _check_packing_options(pack_max_bytes: int, pack_max_group: int) -> None:
    for name, value, low in (("pack_max_bytes", pack_max_bytes, 0), ("pack_max_group", pack_max_group, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")


def _reduce_one(
    tensors: Sequence[tf.Tensor],
    devices: Sequence[str],
    spec_tuple: AllReduceSpecTuple,
    *,
    reduction: str,
    tensor_index: int,
    worker_groups: tuple[tuple[int, ...], ...] | None,
    timeout_s: float,
) -> list[tf.Tensor]:
    info = get_algorithm(spec_tuple.alg)
    shape = tensors[0].shape
    length = shape.num_elements()
    if length == 0:
        # Nothing to add: a copy of each input.
        out = []
        for t, d in zip(tensors, devices):
            with tf.device(d):
                out.append(tf.identity(t))
        return out
    flat = []
    for t, d in zip(tensors, devices):
        with tf.device(d):
            flat.append(tf.reshape(t, [length]))
    ctx = BuildContext(
        info=info,
        shards=spec_tuple.shards,
        tensor_index=tensor_index,
        worker_groups=worker_groups,
        timeout_s=timeout_s,
    )
    summed = run_all_reduce(flat, devices, ctx)
    out = []
    n = len(tensors)
    for s, d in zip(summed, devices):
        with tf.device(d):
            if reduction == "mean" and n > 1 and info.reduces:
                s = tf.math.truediv(s, tf.constant(n, dtype=s.dtype))
            out.append(tf.reshape(s, shape))
    return out


def _check_tensors(tensors: Sequence[tf.Tensor]) -> None:
    if isinstance(tensors, str) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a list of tensors, one per device, got {type(tensors).__name__}")
    if len(tensors) == 0:
        raise ValueError("tensors is empty: expected one tensor per device")
    for i, t in enumerate(tensors):
        if not tf.is_tensor(t):
            raise TypeError(f"tensors[{i}] must be a tf.Tensor, got {type(t).__name__}")
    first = tensors[0]
    if not first.shape.is_fully_defined():
        raise ValueError(f"tensors[0] has shape {first.shape}, which is not fully defined")
    for i, t in enumerate(tensors):
        if t.dtype != first.dtype:
            raise ValueError(f"tensors[{i}] has dtype {t.dtype.name} but tensors[0] has {first.dtype.name}")
        if t.shape != first.shape:
            raise ValueError(f"tensors[{i}] has shape {t.shape} but tensors[0] has {first.shape}")


def all_reduce(
    tensors: Sequence[tf.Tensor],
    spec: str | Sequence[AllReduceSpecTuple] = "xring",
    *,
    reduction: Reduction = "sum",
    devices: Sequence[str] | None = None,
    worker_groups: WorkerGroups | None = None,
    timeout_s: float = 0.0,
) -> list[tf.Tensor]:
    """All-reduces one tensor per device with the algorithm ``spec`` names.

    Args:
        tensors: one tensor per device, each on its device, all of one shape and dtype.
        spec: a spec string (see :mod:`allreduce.spec`) or parsed spec tuples; with size
            ranges, the range that holds the tensor's element count is used.
        reduction: ``"sum"`` or ``"mean"`` (floating dtypes only).
        devices: the device of each tensor, for tensors that do not carry one
            (arguments of a ``tf.function``); defaults to each tensor's ``.device``.
        worker_groups: input indices grouped by worker for hierarchical specs; by
            default devices are grouped by their ``/job/replica/task``.
        timeout_s: for ``collective``, the most seconds to wait for peers (0: none).

    Returns:
        One result per input, in order, each on its input's device; all results are
        bitwise identical (except for the no-reduction baseline ``trivial``).

    Raises:
        TypeError: ``tensors`` is not a list of tensors or the spec not a string.
        ValueError: no tensors; shapes or dtypes differ; an unsupported dtype or
            reduction; a malformed spec; an algorithm that cannot run on these
            devices or honour the shard count. Raised while the graph is built.
    """
    _check_tensors(tensors)
    _check_reduction(reduction, tensors[0].dtype)
    names = _resolve_devices(tensors, devices, "tensor")
    spec_tuple = select_spec_tuple(_parse(spec), tensors[0].shape.num_elements())
    _check_devices(spec_tuple.alg, names)
    groups = _check_worker_groups(worker_groups, len(tensors))
    with tf.name_scope("all_reduce"):
        return _reduce_one(
            tensors,
            names,
            spec_tuple,
            reduction=reduction,
            tensor_index=0,
            worker_groups=groups,
            timeout_s=timeout_s,
        )


def batch_all_reduce(
    tower_tensors: Sequence[Sequence[tf.Tensor]],
    spec: str | Sequence[AllReduceSpecTuple] = "xring",
    *,
    reduction: Reduction = "sum",
    pack_max_bytes: int = 0,
    pack_max_group: int = 10,
    devices: Sequence[str] | None = None,
    worker_groups: WorkerGroups | None = None,
    timeout_s: float = 0.0,
) -> list[list[tf.Tensor]]:
    """All-reduces many tensors per device: ``tower_tensors[d][i]`` is tensor i on device d.

    Each tensor goes to the spec range that holds its element count; algorithms that
    pick devices round-robin (``pscpu``, ``better``) spread a batch over their devices.
    With ``pack_max_bytes > 0``, runs of small tensors of one dtype (at most that many
    bytes each, at most ``pack_max_group`` per pack) are concatenated first and split
    after, so that one all-reduce carries many small tensors.

    Args:
        devices: the device of each tower, for towers whose tensors carry none.
        Other arguments as in :func:`all_reduce`.

    Returns:
        ``result[d][i]``, shaped like ``tower_tensors[d][i]``, on tower d's device.

    Raises:
        TypeError, ValueError: as :func:`all_reduce`; also when towers differ in
            length, shape or dtype, or the packing options are invalid.
    """
    if isinstance(tower_tensors, str) or not isinstance(tower_tensors, Sequence):
        raise TypeError("tower_tensors must be a list (devices) of lists (tensors)")
    validate_tower_grads([[(t, None) for t in tower] for tower in tower_tensors])
    _check_packing_options(pack_max_bytes, pack_max_group)
    num_towers = len(tower_tensors)
    count = len(tower_tensors[0])
    if devices is not None:
        if isinstance(devices, str) or len(devices) != num_towers:
            raise ValueError(f"devices must list one device per tower: {num_towers}, got {devices!r}")
        tower_devices = [[devices[d]] * count for d in range(num_towers)]
    else:
        tower_devices = [
            _resolve_devices(tower, None, f"tower {d} tensor") for d, tower in enumerate(tower_tensors)
        ]
    specs = _parse(spec)
    for i in range(count):
        _check_tensors([tower[i] for tower in tower_tensors])
        _check_reduction(reduction, tower_tensors[0][i].dtype)
    groups = _check_worker_groups(worker_groups, num_towers)
    if count == 0:
        return [[] for _ in tower_tensors]
    with tf.name_scope("batch_all_reduce"):
        # Each pair's "variable" is the tensor's index, to find its device after packing.
        pairs = [[(t, i) for i, t in enumerate(tower)] for tower in tower_tensors]
        packed, packing = pack_small_tensors(
            pairs,
            max_bytes=pack_max_bytes,
            max_group=pack_max_group,
            devices=list(devices) if devices is not None else None,
        )

        def origin(d: int, j: int) -> int:
            index = packed[d][j][1]
            return packing[f"{d}:{j}"].indices[0] if index == PACKED_VAR_PLACEHOLDER else index

        used: dict[AllReduceSpecTuple, int] = {}
        columns = []
        for j in range(len(packed[0])):
            column = [tower[j][0] for tower in packed]
            column_devices = [tower_devices[d][origin(d, j)] for d in range(num_towers)]
            spec_tuple = select_spec_tuple(specs, column[0].shape.num_elements())
            _check_devices(spec_tuple.alg, column_devices)
            index = used.get(spec_tuple, 0)
            used[spec_tuple] = index + 1
            columns.append(
                _reduce_one(
                    column,
                    column_devices,
                    spec_tuple,
                    reduction=reduction,
                    tensor_index=index,
                    worker_groups=groups,
                    timeout_s=timeout_s,
                )
            )
        reduced = [[(columns[j][d], packed[d][j][1]) for j in range(len(columns))] for d in range(num_towers)]
        unpacked = unpack_small_tensors(reduced, packing)
        return [[t for t, _ in tower] for tower in unpacked]
