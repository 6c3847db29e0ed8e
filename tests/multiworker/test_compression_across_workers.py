"""``compression="bf16"`` and ``"fp16"`` across worker processes, with the default policy.

A client process opens a local cluster of 2 workers x 2 CPUs and all-reduces random
float32 values. Only hops between the workers are compressed: every result stays
within :func:`allreduce.error_bound` of the float64 sum, identical on every device of
both workers, and a flat ring's results are wire values (its last hop crossed a worker).
"""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from tests import forkserver
from tests.oracle import exact_sum

from .conftest import ROOT

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(600)]

SPECS = ["xring", "pscpu/pscpu", "pscpu/xring", "torus"]

CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import allreduce
    from allreduce.cluster import local_cluster

    specs = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    out = {}
    with local_cluster(2, 2) as cluster:
        devices = [d for worker in cluster.devices for d in worker]
        values = [rng.standard_normal(1000).astype(np.float32) * 100 for _ in devices]
        tensors = []
        for value, device in zip(values, devices):
            with tf.device(device):
                tensors.append(tf.constant(value))
        out["inputs"] = [v.tolist() for v in values]

        def reducer(spec, compression):
            def run(*xs):
                return allreduce.all_reduce(list(xs), spec, devices=devices, compression=compression)

            return tf.function(run)

        for spec in specs:
            for compression in ("none", "bf16", "fp16"):
                results = cluster.run(reducer(spec, compression), *tensors)
                out[f"{spec} {compression}"] = [r.numpy().tolist() for r in results]
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def outputs() -> dict:
    done = forkserver.run([sys.executable, "-c", CLIENT, json.dumps(SPECS)], timeout=500, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("compression", ["bf16", "fp16"])
@pytest.mark.parametrize("spec", SPECS)
def test_compressed_sums_across_workers_stay_within_the_bound(outputs, spec: str, compression: str) -> None:
    import allreduce

    inputs = [np.array(v, np.float64) for v in outputs["inputs"]]
    results = [np.array(r, np.float32) for r in outputs[f"{spec} {compression}"]]
    groups = [[0, 1], [2, 3]]
    bound = allreduce.error_bound(spec, 4, compression, worker_groups=groups)
    limit = bound.limit(np.sum(np.abs(inputs), axis=0), np.max(np.abs(inputs)))
    assert all(r.tobytes() == results[0].tobytes() for r in results[1:])
    assert np.all(np.abs(results[0].astype(np.float64) - exact_sum(inputs)) <= limit)
    plain = np.array(outputs[f"{spec} none"][0], np.float32)
    assert not np.array_equal(results[0], plain), "nothing was compressed"
    if spec == "xring" and compression == "bf16":
        import tensorflow as tf

        rounded = tf.cast(tf.cast(tf.constant(results[0]), tf.bfloat16), tf.float32).numpy()
        assert np.array_equal(rounded, results[0])  # the ring's last hop crossed a worker
