"""Every entry point is safe to call from several threads at once.

Four threads all-reduce at once through ``all_reduce``, ``batch_all_reduce``, the
compat functions and ``SpecCrossDeviceOps``, eagerly and inside ``tf.function``, two of
them with one shape and two with another, for every CPU algorithm of the registry
(``_stress.py``). Each scenario runs in a child process so that a hang fails the test
(at its timeout) instead of stopping the suite; every result is checked against the
float64 oracle on every device, and replicas bitwise.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import allreduce
from allreduce.graph import eager
from tests import forkserver
from tests.strategies import cpu, make_tensor

STRESS = Path(__file__).with_name("_stress.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("scenario", ["eager", "function"])
def test_threads_all_reducing_at_once_get_exact_results(scenario: str, tmp_path: Path) -> None:
    out = tmp_path / "failures.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    try:
        done = forkserver.run(
            [sys.executable, str(STRESS), scenario, str(out)], cwd=ROOT, env=env, timeout=240
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the {scenario} stress run hung (no end after 240 s); stderr:\n{err.stderr}")
    assert done.returncode == 0, done.stderr[-4000:]
    failures = json.loads(out.read_text())
    assert failures == [], "\n".join(failures)


def test_eager_cache_stays_bounded_and_never_warns_about_retracing(caplog) -> None:
    caplog.set_level(logging.WARNING)
    eager.clear()
    devices = [cpu(0), cpu(1)]
    for length in range(1, eager.CACHE_SIZE + 20):
        tensors = [make_tensor(np.ones(length), tf.float32, d) for d in devices]
        out = allreduce.all_reduce(tensors, "xring")
        assert out[1].numpy()[-1] == 2.0
    assert eager.cache_size() == eager.CACHE_SIZE
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


def test_a_collective_failure_is_explained(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise tf.errors.CancelledError(None, None, "Function was cancelled before it was started")

    monkeypatch.setattr(eager, "call", fail)
    tensors = [make_tensor(np.ones(3), tf.float32, cpu(i)) for i in range(2)]
    with pytest.raises(tf.errors.CancelledError) as info:
        allreduce.all_reduce(tensors, "xring:2:collective")
    assert "only a new process runs 'collective' again" in str(info.value)
    with pytest.raises(tf.errors.CancelledError) as info:
        allreduce.all_reduce(tensors, "xring")
    assert "allreduce:" not in str(info.value)


def test_instance_keys_handed_out_in_many_threads_at_once_are_never_repeated() -> None:
    # Eight threads each run a traced graph that takes four keys, 100 times. An
    # increment followed by a separate read handed out a repeated key in every such run.
    from allreduce.graph.algorithms import collective

    @tf.function(autograph=False)
    def four_keys(x: tf.Tensor) -> tf.Tensor:
        return tf.stack([collective._instance_key(cpu(i)) + tf.size(x) * 0 for i in range(4)])

    keys: list[int] = []
    lock = threading.Lock()

    def work(length: int) -> None:
        x = tf.ones([length])
        mine = [int(k) for _ in range(100) for k in four_keys(x).numpy()]
        with lock:
            keys.extend(mine)

    threads = [threading.Thread(target=work, args=(j + 1,)) for j in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 * 100 * 4
    repeated = sorted(k for k in set(keys) if keys.count(k) > 1)
    assert repeated == [], f"instance keys handed out twice: {repeated[:10]}"
