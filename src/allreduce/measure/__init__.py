"""The measuring engine shared by tuning and the benchmark: cases and their inputs
(:mod:`.cases`), contenders and peers (:mod:`.contenders`, :mod:`.peers`), and timing
with exactness checks (:mod:`.driver`). May use the public API, the cluster backends and
the layers below; never the CLI (:mod:`allreduce.bench`) or :mod:`allreduce.tuning`.
"""
