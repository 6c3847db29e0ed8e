"""NVIDIA NCCL all-reduce (``nccl``): its declaration (pure Python). It sums inside one
kernel, so its rounding rule and cost formula are the shared native ones. Its builder:
``allreduce.graph.algorithms.nccl``."""

from __future__ import annotations

from allreduce.planning.algorithms.base import GPU_ONLY, AlgorithmInfo
from allreduce.planning.cost import native_ring
from allreduce.planning.roundings import native_roundings

__layer__ = "pure"

__all__ = ["NCCL"]

NCCL = AlgorithmInfo(
    "nccl",
    "NVIDIA NCCL all-reduce (tf.raw_ops.NcclAllReduce)",
    None,
    GPU_ONLY,
    distinct_devices=True,
    physical_devices=True,
    emulable=False,
    roundings=native_roundings,
    cost=native_ring,
)
