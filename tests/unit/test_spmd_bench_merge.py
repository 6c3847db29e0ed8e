"""How SPMD workers' records become the benchmark's rows, and which specs the SPMD
benchmark runs by default (pure: no worker is started)."""

from __future__ import annotations

import pytest

from allreduce.measure.cases import Case
from allreduce.measure.contenders import OURS, PEER
from allreduce.measure.spmd_driver import PEER_NAME, Record, merge, spmd_contenders
from allreduce.planning.registry import algorithm_names, get_algorithm
from allreduce.spmd.specs import CAPABLE, PEER_SPEC, cluster_devices, default_spmd_specs, is_spmd_capable

CASE = Case("4KiB", ((1024,),), "float32")


def _rows(per_worker):
    return merge(CASE, spmd_contenders(["xring"], peer=True), per_worker, devices_per_worker=2)


def test_a_step_takes_the_slowest_workers_time_in_each_round():
    a = [Record([1.0, 5.0, 2.0], digest="d"), Record([3.0], digest="p")]
    b = [Record([4.0, 1.0, 2.5], digest="d"), Record([1.0], digest="p")]
    ours, peer = _rows([a, b])
    assert ours.samples_s == [4.0, 5.0, 2.5] and peer.samples_s == [3.0]
    assert (ours.kind, ours.spec, ours.num_devices) == (OURS, "xring", 4)
    assert (peer.kind, peer.name, peer.spec, peer.same_as) == (PEER, PEER_NAME, None, PEER_SPEC)
    assert ours.ok and peer.ok and not peer.required


def test_wrong_elements_add_up_and_a_worker_with_other_bits_differs_in_every_element():
    a = [Record([1.0], wrong=2, digest="x"), Record([1.0], digest="p")]
    b = [Record([1.0], wrong=3, local_mismatch=1, digest="y"), Record([1.0], digest="p")]
    ours, peer = _rows([a, b])
    assert ours.wrong == 5 and ours.replica_mismatch == 1 + CASE.count and ours.failed
    assert peer.ok


def test_an_error_or_a_skip_names_the_worker_and_a_required_skip_fails():
    a = [Record(skipped="ValueError: no"), Record(error="boom")]
    b = [Record(skipped="ValueError: no"), Record([1.0])]
    ours, peer = _rows([a, b])
    assert ours.skipped == "worker 0: ValueError: no" and ours.failed
    assert peer.error == "worker 0: boom" and not peer.timed


def test_auto_rows_name_the_spec_it_became():
    rows = merge(CASE, spmd_contenders(["auto"], peer=False), [[Record([1.0], resolved="rechd")]] * 2, 1)
    assert rows[0].label == "auto=rechd"


def test_the_default_specs_are_the_registrys_spmd_capable_ones_but_the_peer():
    for workers, devices in ((2, 1), (4, 1), (3, 2)):
        specs = default_spmd_specs(workers, devices)
        assert PEER_SPEC not in specs and specs
        assert all(is_spmd_capable(s) for s in specs)
        flat = [n for n in algorithm_names() if get_algorithm(n).reduces and n in CAPABLE and n != PEER_SPEC]
        assert set(flat) <= set(specs)
        assert any("/" in s for s in specs) == (devices > 1)
    assert not is_spmd_capable("simple") and not is_spmd_capable("collective@bf16")
    assert is_spmd_capable("xring@bf16")  # pairwise exchanges compress across workers


def _stub_worker(monkeypatch, steps):
    """``measure_case`` on one stub worker whose contenders' steps are ``steps`` (no
    TensorFlow runtime, no other worker)."""
    import types

    import numpy as np

    from allreduce.measure import spmd_driver

    monkeypatch.setattr(spmd_driver, "_inputs", lambda case, rank, devices, total: ([], [np.zeros(1024)]))
    calls = iter(steps)
    monkeypatch.setattr(spmd_driver, "_compile", lambda *args: next(calls))
    monkeypatch.setattr(spmd_driver, "_check", lambda *args: None)
    plan = spmd_driver.Plan((CASE,), tuple(spmd_contenders(["xring", "rechd"], peer=False)), 1, 0, 2, 5.0)
    worker = types.SimpleNamespace(num_workers=2, rank=0)
    return lambda: spmd_driver.measure_case(CASE, plan, worker, ["/device:CPU:0"])


def test_a_step_that_fails_while_it_runs_ends_the_worker_naming_the_contender_and_case(monkeypatch):
    import pytest

    from allreduce.measure.spmd_driver import StepFailed

    def good():
        return [[]]

    runs = iter([None, None, RuntimeError("DeadlineExceeded: the peer did not answer")])

    def flaky():
        err = next(runs)
        if err is not None:
            raise err
        return [[]]

    measure = _stub_worker(monkeypatch, [good, flaky])
    with pytest.raises(StepFailed, match="rechd on 4KiB failed: RuntimeError: DeadlineExceeded"):
        measure()


def test_a_contender_that_cannot_be_built_is_a_skipped_row_and_the_others_run(monkeypatch):
    def cannot():
        raise ValueError("no SPMD form here")

    def good():
        return [[]]

    records = _stub_worker(monkeypatch, [cannot, good])()
    assert records[0].skipped == "ValueError: no SPMD form here" and not records[0].samples_s
    assert records[1].skipped is None and len(records[1].samples_s) == 2


def test_the_default_specs_of_small_clusters_are_the_documented_ones():
    # docs/benchmark.md: every SPMD-capable algorithm, its "#2" where two shards fit the
    # devices, and the pairs A/B (without "#2") when a worker has more than one device.
    flat = ["xring", "xring#2", "rechd", "pscpu", "pscpu#2", "torus"]
    assert default_spmd_specs(2, 1) == [*flat, "torus#2"]
    assert default_spmd_specs(3, 1) == flat  # 2 does not divide 3 devices: no torus#2
    assert default_spmd_specs(2, 2) == [*flat, "torus#2", "pscpu/pscpu"]
    assert default_spmd_specs(5, 3) == [*flat, "pscpu/pscpu"]


def test_a_refused_spec_lists_the_choices_one_by_one():
    from allreduce.planning.spec import parse_all_reduce_spec
    from allreduce.spmd.programs import ALGORITHMS
    from allreduce.spmd.specs import check_spmd_spec

    with pytest.raises(ValueError) as refused:
        check_spmd_spec(parse_all_reduce_spec("simple"))
    assert f"use one of {', '.join(CAPABLE)} (or A/B" in str(refused.value)
    with pytest.raises(ValueError) as compressed:
        check_spmd_spec(parse_all_reduce_spec("collective"), compression="bf16")
    assert f"({', '.join(ALGORITHMS)}), not 'collective'" in str(compressed.value)


def test_a_cluster_is_named_by_the_cpus_of_each_worker_in_turn():
    assert cluster_devices(2, 2) == [
        "/job:worker/replica:0/task:0/device:CPU:0",
        "/job:worker/replica:0/task:0/device:CPU:1",
        "/job:worker/replica:0/task:1/device:CPU:0",
        "/job:worker/replica:0/task:1/device:CPU:1",
    ]
    assert cluster_devices(1, 1, "GPU") == ["/job:worker/replica:0/task:0/device:GPU:0"]
