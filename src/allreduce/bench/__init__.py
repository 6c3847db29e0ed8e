"""``allreduce-bench``: time and check all-reduce specs against numpy and TensorFlow.

In the style of NVIDIA's nccl-tests: :mod:`~allreduce.measure.driver` owns everything
generic (inputs with an exactly known sum, warm-up, timing, verification), each
contender (:mod:`~allreduce.measure.contenders`, :mod:`~allreduce.measure.peers`) only says
whether it applies and how to run once, and :mod:`~allreduce.bench.report` and
:mod:`~allreduce.bench.plot` turn results into the table, JSON and a picture.

The command line is :func:`allreduce.bench.cli.main`: it reads the options into one
:class:`~allreduce.bench.options.Options`, checks them and the machine
(:mod:`~allreduce.bench.preflight`) before TensorFlow starts, and hands them to
:func:`allreduce.bench.session.run`, which imports TensorFlow quietly
(:mod:`~allreduce.core.quiet`) and measures case by case. ``--list-specs`` prints
:mod:`~allreduce.measure.catalog`'s description of the registry.
"""
