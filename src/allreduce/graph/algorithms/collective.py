"""TensorFlow collective all-reduce (``collective``): ``CollectiveReduceV2``.

Works within one process and across workers of a cluster. Devices share a group key
per device set. Every launch takes a fresh instance key *when it runs*: a counter on
this process's CPU hands one out per execution, read and incremented by one op under the
variable's lock, so two threads running traced graphs at once never present one instance
key twice (TensorFlow aborts every collective of the process when they do). Each
device's collectives are ordered by a per-device resource token, so that a
``tf.function`` does not chain the members of one collective one after another (which
would deadlock).

In a TensorFlow 1 graph built for a ``Session`` the instance key is fixed when the
graph is built, as TensorFlow's own collectives do.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from allreduce.core._tf import tf
from allreduce.core.runtime_hooks import on_context_change
from allreduce.graph.algorithms.base import BuildContext, graph_cached

_lock = threading.Lock()
_group_keys: dict[tuple[str, ...], int] = {}
_next_group_keys = itertools.count(1)
_graph_instance_keys = itertools.count(1 << 30)
_counter: list[tf.Variable] = []
#: Run-time instance keys count up from 1 and stay below the keys of TensorFlow 1 graphs.
_KEY_LIMIT = (1 << 30) - 1


def group_key(devices: Sequence[str]) -> int:
    """A stable group key for this set of devices (the same key in every call until
    :func:`forget_groups`)."""
    members = tuple(sorted(devices))
    with _lock:
        key = _group_keys.get(members)
        if key is None:
            key = _group_keys[members] = next(_next_group_keys)
        return key


@on_context_change
def forget_groups() -> None:
    """Gives every device set a new, never used group key from the next call on.

    TensorFlow remembers each group's devices with their incarnations; once the eager
    context changes (connecting to or leaving a cluster) an old key names stale
    devices and its collectives abort. The instance-key counter, a variable of the old
    context, is made anew too.
    """
    with _lock:
        _group_keys.clear()
        _counter.clear()


def _instance_counter() -> tf.Variable:
    """The process-wide instance-key counter, created outside any graph on first use."""
    with _lock:
        if not _counter:
            with tf.init_scope(), tf.device("/device:CPU:0"):
                _counter.append(
                    tf.Variable(1, dtype=tf.int32, trainable=False, name="allreduce_instance_key")
                )
        return _counter[0]


def _instance_key(device: str) -> tf.Tensor:
    """A fresh instance key for each execution of the graph being built (in a TensorFlow
    1 graph, a constant on ``device``)."""
    if not tf.compat.v1.executing_eagerly_outside_functions():
        with _lock:
            key = next(_graph_instance_keys)
        with tf.device(device):
            return tf.constant(key)
    counter = _instance_counter()
    with tf.device(counter.device):
        # One op that reads and increments under the variable's lock: an assign_add
        # followed by a read lets two concurrent executions read the same value.
        return tf.raw_ops.ResourceCountUpTo(resource=counter.handle, limit=_KEY_LIMIT, T=tf.int32)


def _ordering_token(device: str) -> tf.Tensor:
    """The resource that orders this device's collectives, one per graph and device."""

    def make() -> tf.Tensor:
        with tf.control_dependencies(None), tf.device(device), tf.name_scope("allreduce_token"):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="", container="")

    return graph_cached(("ordering token", device), make)


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Emits one ``CollectiveReduceV2`` per device over 1-D ``values``."""
    size = len(values)
    key = group_key(devices)
    instance = _instance_key(devices[0])
    out = []
    for value, device in zip(values, devices):
        with tf.device(device):
            out.append(
                tf.raw_ops.CollectiveReduceV2(
                    input=value,
                    group_size=tf.constant(size),
                    group_key=tf.constant(key),
                    instance_key=instance,
                    ordering_token=[_ordering_token(device)],
                    merge_op="Add",
                    final_op="Id",
                    communication_hint="auto",
                    timeout_seconds=float(ctx.timeout_s),
                )
            )
    return out
