"""allreduce.explain: the plan's rows, their bytes and steps, the prediction, the table."""

from __future__ import annotations

import threading

import pytest

import allreduce
from allreduce.planning.cost_model import DEFAULT, Model
from allreduce.selection import auto
from allreduce.tuning.tuner import tune_entry
from tests.unit.test_tuning_search import MACHINE, FakeMachine

CPUS = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(4)]
GPUS = [d.replace("CPU", "GPU") for d in CPUS]
WORKERS = [f"/job:worker/replica:0/task:{t}/device:CPU:{i}" for t in range(2) for i in range(2)]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLREDUCE_CACHE_DIR", str(tmp_path / "cache"))
    auto.forget()


def test_one_row_per_tensor_with_its_range_algorithm_steps_and_bytes():
    plan = allreduce.explain("simple:1k:xring#2", GPUS, [1000, 4096, 1024])
    assert plan.spec == "simple:1k:xring#2"
    assert [r.tensors for r in plan.rows] == [(0,), (1,), (2,)]
    assert [r.range for r in plan.rows] == ["[0, 1k]", "(1k, inf)", "[0, 1k]"]
    assert [r.algorithm for r in plan.rows] == ["simple", "xring#2", "simple"]
    simple, ring, _ = plan.rows
    # simple: three GPUs send their 4000 bytes to the first, which sends the sum back to each.
    assert (simple.steps, simple.sent_bytes, simple.received_bytes) == (2, 3 * 4000, 3 * 4000)
    # ring: 2(p-1) steps, each GPU sends 2 n (p-1) / p bytes.
    n = 4096 * 4
    assert (ring.steps, ring.sent_bytes, ring.received_bytes) == (6, 2 * n * 3 // 4, 2 * n * 3 // 4)
    assert all(r.predicted_s > 0 for r in plan.rows)
    assert plan.predicted_s == pytest.approx(plan.overhead_s + sum(r.predicted_s for r in plan.rows))


def test_the_table_shows_every_row_and_the_step():
    text = str(allreduce.explain("pscpu:64k:xring", CPUS, [5, 300_000], pack_max_bytes=0))
    lines = text.splitlines()
    assert lines[0] == "spec 'pscpu:64k:xring' on 4 devices, float32"
    assert lines[1].startswith("model: default parameters")
    assert lines[2].split()[:5] == ["#", "tensors", "elements", "range", "algorithm"]
    assert lines[3].split()[:5] == ["0", "0", "5", "[0,", "64k]"]
    assert "xring" in lines[4] and "MiB" in lines[4]
    assert lines[-1].startswith("step: ") and "predicted" in lines[-1]


def test_packs_are_one_row_and_hierarchical_specs_cross_workers():
    plan = allreduce.explain("pscpu/xring", WORKERS, [10, 20, 30, 1 << 20], pack_max_bytes=1024)
    assert [r.tensors for r in plan.rows] == [(0, 1, 2), (3,)]
    assert plan.rows[0].elements == 60
    assert plan.rows[1].steps == 4  # sum within each worker, ring of two workers (2 steps), broadcast
    assert "0,1,2" in str(plan)


def test_auto_is_explained_as_what_it_resolves_to():
    tune_entry(CPUS, [1000, 2000], measure=FakeMachine(MACHINE), specs=["rechd"])
    plan = allreduce.explain("auto", CPUS, [1000, 2000])
    assert plan.spec == "rechd"
    assert "'auto': tuned for this workload" in str(plan).splitlines()[0]
    assert plan.model.startswith("fitted on ")


def test_a_given_model_predicts_and_an_algorithm_without_formula_predicts_nothing(monkeypatch):
    import dataclasses

    from allreduce.planning import registry

    half = Model({k: v / 2 for k, v in DEFAULT.params.items()})
    full = allreduce.explain("xring", CPUS, [5000], model=DEFAULT)
    assert allreduce.explain("xring", CPUS, [5000], model=half).predicted_s == pytest.approx(
        full.predicted_s / 2
    )
    info = registry.get_algorithm("better")
    monkeypatch.setitem(registry._REGISTRY, "better", dataclasses.replace(info, cost=None))
    plan = allreduce.explain("better", CPUS, [5000])
    assert plan.predicted_s is None and plan.rows[0].steps is None
    assert " - " in str(plan).splitlines()[3]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("nosuch", CPUS, [1]), ValueError),
        (("xring", [], [1]), ValueError),
        (("xring", CPUS, [-1]), ValueError),
        (("xring", CPUS, ["1"]), TypeError),
        (("nccl", CPUS, [1]), ValueError),
        (("xring", "CPU:0", [1]), TypeError),
    ],
)
def test_bad_arguments_raise(args, error):
    with pytest.raises(error):
        allreduce.explain(*args)


def test_explain_from_several_threads_agrees():
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(str(allreduce.explain("rechd", CPUS, [777, 99_999]))))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1


def test_ranges_and_compression_are_named_in_each_row():
    plan = allreduce.explain("simple:1k:xring#2@bf16:1M:trivial", GPUS, [1, 2000, 2_000_000])
    assert [r.range for r in plan.rows] == ["[0, 1k]", "(1k, 1M]", "(1M, inf)"]
    assert [r.algorithm for r in plan.rows] == ["simple", "xring#2@bf16", "trivial"]
    assert (plan.rows[2].steps, plan.rows[2].sent_bytes) == (0, 0)
    assert "1.9 MiB" in str(plan) or "KiB" in str(plan)
