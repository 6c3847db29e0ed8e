"""NVIDIA NCCL all-reduce (``nccl``) through ``tf.raw_ops.NcclAllReduce``; GPUs only.

NCCL needs every input on a different physical GPU of one process. The ops of one
all-reduce share a name that no other all-reduce uses, so that concurrent launches
never meet.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from allreduce.core._tf import tf
from allreduce.graph.algorithms.base import BuildContext

_lock = threading.Lock()
_names = itertools.count(1)


def _shared_name() -> str:
    with _lock:
        return f"allreduce_nccl_{next(_names)}"


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Emits one ``NcclAllReduce`` per GPU over 1-D ``values``."""
    del ctx
    name = _shared_name()
    out = []
    for value, device in zip(values, devices):
        with tf.device(device):
            out.append(
                tf.raw_ops.NcclAllReduce(
                    input=value, reduction="sum", num_devices=len(values), shared_name=name
                )
            )
    return out
