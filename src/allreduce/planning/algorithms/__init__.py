"""Each built-in algorithm's pure declaration, one module per algorithm (pure Python).

A module here holds everything the planning layer knows of its algorithm: the
:class:`~allreduce.planning.algorithms.base.AlgorithmInfo` entry (device types, shard
rule, flags), its schedule, its rounding rules and its cost formula, as objects. Its
builder lives in the module of the same name under ``allreduce.graph.algorithms``.
:mod:`allreduce.planning.registry` lists the declarations, and
``allreduce.graph.algorithms`` binds each name to its builder.
"""
