"""The leaves every layer may use: argument checks (:mod:`.validation`), the tables of
dtypes, reductions and compressions (:mod:`.tables`), the guarded TensorFlow import
(:mod:`._tf`) and runtime reset hooks (:mod:`.runtime_hooks`). Imports nothing else of
``allreduce``.
"""
