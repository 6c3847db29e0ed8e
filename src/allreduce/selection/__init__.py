"""Choosing a spec without measuring: ``"auto"`` resolved from the tuning cache or the
cost model (:mod:`.auto`, :mod:`.cache`, :mod:`.decide`, :mod:`.candidates`,
:mod:`.bands`, :mod:`.workload`), and :func:`.explain.explain`. Pure Python: may use
:mod:`allreduce.planning` and :mod:`allreduce.core`, never TensorFlow.
"""
