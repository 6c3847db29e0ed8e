"""TensorFlow builders, one module per algorithm, bound here to the names their pure
declarations give (:mod:`allreduce.planning.algorithms`, listed by
:mod:`allreduce.planning.registry`)."""

from allreduce.graph.algorithms import (
    collective,
    halving_doubling,
    hierarchical,
    nccl,
    ring,
    shuffle,
    simple,
    torus,
)
from allreduce.graph.algorithms.base import BUILDERS, HIERARCHICAL, Builders, builder_of, reducer_of

__all__ = ["BUILDERS", "HIERARCHICAL", "Builders", "builder_of", "reducer_of"]

BUILDERS.update(
    {
        "xring": Builders(ring.all_reduce),
        "rechd": Builders(halving_doubling.all_reduce),
        "pscpu": Builders(shuffle.all_reduce_on_cpus, shuffle.reduce_on_cpus),
        "psgpu": Builders(shuffle.all_reduce_on_gpus, shuffle.reduce_on_gpus),
        "nccl": Builders(nccl.all_reduce),
        "collective": Builders(collective.all_reduce),
        "simple": Builders(simple.simple, simple.simple_reduce),
        "better": Builders(simple.better, simple.better_reduce),
        "trivial": Builders(simple.trivial),
        "torus": Builders(torus.all_reduce),
        HIERARCHICAL: Builders(hierarchical.all_reduce),
    }
)
