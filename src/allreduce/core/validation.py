"""Every argument check of the library, in one place and one style.

A value of the wrong type raises ``TypeError``; a value of the right type that is not
allowed raises ``ValueError``. Either message names the argument and the value. The
scalar checks are pure Python (the planning layer uses them without TensorFlow); the
tensor checks import TensorFlow when first called. Checks that need a layer above
(a spec, device names, the runtime's devices) live with what they check:
:func:`allreduce.planning.spec.check_spec`, :func:`allreduce.planning.devices.check_device_names`,
:func:`allreduce.graph.local_devices.check_devices_exist`.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

from allreduce.core.tables import DTYPE_SIZES, REDUCTIONS

__all__ = [
    "check_bool",
    "check_choice",
    "check_dense",
    "check_dtype",
    "check_reduction",
    "check_int",
    "check_optional",
    "check_ports",
    "check_ray_address",
    "check_ray_resources",
    "check_seconds",
    "check_sequence",
    "check_spmd_cluster",
    "check_tensor_list",
    "check_towers",
    "check_worker_groups",
]


def _describe(value: Any) -> str:
    return f"{type(value).__name__}: {value!r}"


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integral number (``int``, ``numpy.int64``, ...;
    not a ``bool``) from ``minimum`` to ``maximum``.

    Raises:
        TypeError: ``value`` is not an integral number.
        ValueError: ``value`` is below ``minimum`` or above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"{name} must be {minimum}..{maximum}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return int(value)


def check_ports(ports: Any, count: int) -> list[int] | None:
    """``ports`` as a list if it holds ``count`` distinct port numbers (1..65535), or ``None``.

    Raises:
        TypeError: not a sequence of ints.
        ValueError: another count, a repeated port, or a number out of range.
    """
    if ports is None:
        return None
    check_sequence("ports", ports, "port numbers")
    chosen = [check_int(f"ports[{i}]", p) for i, p in enumerate(ports)]
    if len(chosen) != count or len(set(chosen)) != count or not all(0 < p < 65536 for p in chosen):
        raise ValueError(f"ports must be {count} distinct port numbers in 1..65535, got {chosen!r}")
    return chosen


def check_seconds(name: str, value: Any, *, allow_zero: bool) -> float:
    """``value`` as a float if it is a finite number of seconds, positive (or zero,
    when ``allow_zero``, which means no limit).

    Raises:
        TypeError: ``value`` is not an int or float.
        ValueError: ``value`` is negative, not finite, or zero when that is not allowed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {_describe(value)}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        what = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {what} finite number of seconds, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool``.

    Raises:
        TypeError: ``value`` is not a bool.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return value


def check_callable(name: str, value: Any) -> Any:
    """``value`` if it is callable.

    Raises:
        TypeError: it is not.
    """
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {_describe(value)[:200]}")
    return value


def check_optional(name: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is ``None`` or an instance of ``kind``.

    Raises:
        TypeError: ``value`` is neither; the message says it should be ``what``.
    """
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be {what} or None, got {_describe(value)[:200]}")
    return value


_RAY_ADDRESS = re.compile(r"(auto|ray://\S+|\S+:\d+)")


def check_ray_address(address: Any) -> str | None:
    """``address`` if it is ``None``, ``"auto"``, ``"ray://HOST:PORT"`` or ``"HOST:PORT"``.

    Raises:
        TypeError: ``address`` is not a str.
        ValueError: it is none of those forms.
    """
    check_optional("address", address, str, "a Ray address str")
    if address is not None and not _RAY_ADDRESS.fullmatch(address):
        raise ValueError(f"address must be 'auto', 'ray://HOST:PORT' or 'HOST:PORT', got {address!r}")
    return address


def check_ray_resources(cpus: Any, gpus: Any) -> tuple[float, int]:
    """``(cpus, gpus)`` of one Ray worker: CPUs a non-negative number, GPUs a
    non-negative int, not both zero.

    Raises:
        TypeError: ``cpus`` is not a number or ``gpus`` not an int.
        ValueError: either is negative or not finite, or both are zero.
    """
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)):
        raise TypeError(f"cpus_per_worker must be a number, got {_describe(cpus)}")
    if not math.isfinite(cpus) or cpus < 0:
        raise ValueError(f"cpus_per_worker must be a non-negative finite number, got {cpus!r}")
    check_int("gpus_per_worker", gpus, minimum=0)
    if cpus == 0 and gpus == 0:
        raise ValueError("cpus_per_worker and gpus_per_worker are both 0: a worker must ask for something")
    return cpus, gpus


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``choices``.

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: ``value`` is not one of ``choices``.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {list(choices)}, got {_describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_sequence(name: str, value: Any, what: str) -> Sequence[Any]:
    """``value`` if it is a list-like sequence (not a string or a mapping).

    Raises:
        TypeError: ``value`` is not such a sequence; the message says it should hold ``what``.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of {what}, got {_describe(value)[:200]}")
    return value


def check_worker_groups(groups: Any, n: int) -> tuple[tuple[int, ...], ...] | None:
    """``groups`` as tuples if it splits the indices ``0..n-1`` into non-empty groups.

    Raises:
        TypeError: ``groups`` is not a list of lists of ints.
        ValueError: the groups do not split ``0..n-1`` exactly.
    """
    if groups is None:
        return None
    check_sequence("worker_groups", groups, "lists of input indices")
    result = []
    for g, group in enumerate(groups):
        check_sequence(f"worker_groups[{g}]", group, "input indices")
        result.append(tuple(check_int(f"worker_groups[{g}][{i}]", v) for i, v in enumerate(group)))
    flat = sorted(i for g in result for i in g)
    if flat != list(range(n)) or any(not g for g in result):
        raise ValueError(
            f"worker_groups must split the indices 0..{n - 1} into non-empty groups, got {groups!r}"
        )
    return tuple(result)


def _tensor_kind_error(where: str, value: Any) -> TypeError:
    from allreduce.core._tf import tf

    kind = type(value).__name__
    if isinstance(value, tf.SparseTensor):
        hint = "convert it with tf.sparse.to_dense first"
    elif isinstance(value, tf.RaggedTensor):
        hint = "convert it with .to_tensor() first"
    elif isinstance(value, tf.IndexedSlices):
        hint = "convert it with tf.convert_to_tensor first (or use SpecCrossDeviceOps)"
    elif type(value).__module__.startswith("numpy") or isinstance(value, (int, float, list)):
        hint = "place it on its device first: with tf.device(d): tf.constant(value)"
    else:
        hint = "pass a tf.Tensor or tf.Variable"
    return TypeError(f"{where} must be a dense tf.Tensor (or tf.Variable), got {kind}; {hint}")


def check_dense(where: str, value: Any) -> Any:
    """``value`` as a dense tensor: a ``tf.Tensor`` as is, a ``tf.Variable`` read on its device.

    Raises:
        TypeError: ``value`` is a sparse, ragged or non-TensorFlow value.
    """
    from allreduce.core._tf import tf

    if isinstance(value, tf.Variable):
        with tf.device(value.device):
            return tf.convert_to_tensor(value)
    if isinstance(value, tf.Tensor):
        return value
    raise _tensor_kind_error(where, value)


def check_tensor_list(tensors: Any, name: str = "tensors") -> list[Any]:
    """The dense tensors of ``tensors``, one per device, of one shape and dtype.

    Raises:
        TypeError: ``tensors`` is not a list, or an entry is not a dense tensor (a flat
            list of lists is a ``batch_all_reduce`` argument).
        ValueError: the list is empty, a shape is not fully defined, or the entries
            differ in shape or dtype.
    """
    check_sequence(name, tensors, "tensors, one per device")
    if len(tensors) == 0:
        raise ValueError(f"{name} is empty: expected one tensor per device")
    dense = [check_dense(f"{name}[{i}]", t) for i, t in enumerate(tensors)]
    first = dense[0]
    if not first.shape.is_fully_defined():
        raise ValueError(f"{name}[0] has shape {first.shape}, which is not fully defined")
    for i, t in enumerate(dense):
        if t.dtype != first.dtype:
            raise ValueError(f"{name}[{i}] has dtype {t.dtype.name} but {name}[0] has {first.dtype.name}")
        if t.shape != first.shape:
            raise ValueError(f"{name}[{i}] has shape {t.shape} but {name}[0] has {first.shape}")
    return dense


def check_towers(towers: Any) -> list[list[Any]]:
    """The dense tensors of ``towers[d][i]`` (tensor ``i`` of device ``d``).

    Every tower holds as many tensors as the first; tensor ``i`` has one fully defined
    shape and one dtype on every device.

    Raises:
        TypeError: ``towers`` is not a list of lists of dense tensors; a flat list of
            tensors (the argument of ``all_reduce``) is named as such.
        ValueError: no towers, towers of different lengths, shapes or dtypes.
    """
    check_sequence("tower_tensors", towers, "towers (one list of tensors per device)")
    if len(towers) == 0:
        raise ValueError("tower_tensors is empty: expected one list of tensors per device")
    for d, tower in enumerate(towers):
        if isinstance(tower, (str, bytes)) or not isinstance(tower, Sequence):
            raise TypeError(
                f"tower_tensors must be a list of towers (one list of tensors per device), but "
                f"tower_tensors[{d}] is a {type(tower).__name__}; for one tensor per device use "
                "all_reduce, or wrap each tensor in a list: [[t] for t in tensors]"
            )
    count = len(towers[0])
    for d, tower in enumerate(towers):
        if len(tower) != count:
            raise ValueError(f"tower_tensors[{d}] has {len(tower)} tensors but tower_tensors[0] has {count}")
    dense = [
        [check_dense(f"tower_tensors[{d}][{i}]", t) for i, t in enumerate(tower)]
        for d, tower in enumerate(towers)
    ]
    for i in range(count):
        first = dense[0][i]
        if not first.shape.is_fully_defined():
            raise ValueError(f"tower_tensors[0][{i}] has shape {first.shape}, which is not fully defined")
        for d in range(1, len(dense)):
            t = dense[d][i]
            if t.dtype != first.dtype or t.shape != first.shape:
                raise ValueError(
                    f"tower_tensors[{d}][{i}] is {t.dtype.name}{t.shape} but tower_tensors[0][{i}] "
                    f"is {first.dtype.name}{first.shape}"
                )
    return dense


def check_dtype(dtype: Any) -> str:
    """The name of ``dtype`` (a ``tf.DType`` or its name) if the library all-reduces it.

    Raises:
        TypeError: neither a ``tf.DType`` nor a str.
        ValueError: a dtype the library does not all-reduce.
    """
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None)
    if not isinstance(name, str) or not (isinstance(dtype, str) or hasattr(dtype, "is_floating")):
        raise TypeError(f"dtype must be a tf.DType or its name, got {type(dtype).__name__}: {dtype!r}")
    if name not in DTYPE_SIZES:
        raise ValueError(f"dtype {name!r} cannot be all-reduced; supported: {', '.join(DTYPE_SIZES)}")
    return name


def check_reduction(reduction: Any, dtype: Any) -> str:
    """``reduction`` if it is ``"sum"`` or ``"mean"`` and ``dtype`` can be reduced with it.

    Raises:
        TypeError: ``reduction`` is not a str.
        ValueError: an unknown reduction, an unsupported dtype, or a mean of integers.
    """
    from allreduce.core._tf import SUPPORTED_DTYPES

    check_choice("reduction", reduction, REDUCTIONS)
    if dtype not in SUPPORTED_DTYPES:
        names = ", ".join(d.name for d in SUPPORTED_DTYPES)
        raise ValueError(f"dtype {dtype.name} cannot be all-reduced; supported: {names}")
    if reduction == "mean" and dtype.is_integer:
        raise ValueError(f"reduction='mean' needs a floating dtype, got {dtype.name}; use 'sum'")
    return reduction


#: The jobs whose tasks take part in SPMD mode, in rank order.
SPMD_JOBS = ("chief", "worker")


def check_spmd_cluster(config: Any) -> tuple[list[tuple[str, int, str]], int]:
    """The workers of a ``TF_CONFIG``-style mapping (``{"cluster": {job: [address, ...]},
    "task": {"type": job, "index": i}}``) as ``(job, index, address)`` in rank order
    (``chief`` tasks first, then ``worker``), and this task's rank.

    Raises:
        TypeError: ``config`` or one of its parts has the wrong type.
        ValueError: no workers, another job (``ps``, ``evaluator``), or a task that is
            not in the cluster.
    """
    if not isinstance(config, dict):
        raise TypeError(
            f"a cluster must be a TF_CONFIG dict or a ClusterResolver, got {_describe(config)[:200]}"
        )
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs a 'cluster' and a 'task' mapping, got {config!r}")
    others = sorted(set(cluster) - set(SPMD_JOBS))
    if others:
        raise ValueError(f"SPMD runs on 'chief' and 'worker' tasks only; the cluster also has {others}")
    workers = []
    for job in SPMD_JOBS:
        addresses = check_sequence(f"TF_CONFIG cluster[{job!r}]", cluster.get(job, []), "addresses")
        workers += [(job, i, str(a)) for i, a in enumerate(addresses)]
    if not workers:
        raise ValueError(f"TF_CONFIG's cluster lists no 'chief' or 'worker' task: {cluster!r}")
    job, index = task.get("type"), task.get("index")
    ranks = {(w[0], w[1]): r for r, w in enumerate(workers)}
    if (job, index) not in ranks:
        raise ValueError(f"TF_CONFIG's task {task!r} is not a task of the cluster {cluster!r}")
    return workers, ranks[job, index]
