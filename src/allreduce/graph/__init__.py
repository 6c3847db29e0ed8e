"""The graph layer: turns a plan into TensorFlow ops.

:mod:`.emit` walks a batch plan, :mod:`.wire` and :mod:`.compression` transform what
crosses devices, :mod:`.packing` packs small tensors, :mod:`.eager` caches traced
functions for eager callers, :mod:`.local_devices` splits the CPU, and
:mod:`.algorithms` holds one builder module per algorithm. May use
:mod:`allreduce.planning`, :mod:`allreduce.selection` and :mod:`allreduce.core`.
"""
