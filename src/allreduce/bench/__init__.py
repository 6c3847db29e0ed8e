"""``allreduce-bench``: time and check all-reduce specs against numpy and TensorFlow.

In the style of NVIDIA's nccl-tests: :mod:`~allreduce.bench.driver` owns everything
generic (inputs with an exactly known sum, warm-up, timing, verification), each
contender (:mod:`~allreduce.bench.contenders`, :mod:`~allreduce.bench.peers`) only says
whether it applies and how to run once, and :mod:`~allreduce.bench.report` and
:mod:`~allreduce.bench.plot` turn results into the table, JSON and a PNG. The command
line is :func:`allreduce.bench.cli.main`.
"""
