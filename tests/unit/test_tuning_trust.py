"""Tuning you can trust: no unmeasured answer is cached, ``refresh`` measures again, the
arguments are checked as ``all_reduce`` checks them, and the choice is the fastest
measured single spec or within the measured noise of it (stub measurers)."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest

import allreduce
from allreduce.selection import auto, cache
from allreduce.tuning.tuner import tune_entry
from tests.unit.test_tuning_search import CPUS, MACHINE, FakeMachine, workload

SPECS = ["simple", "xring", "pscpu"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLREDUCE_CACHE_DIR", str(tmp_path / "cache"))
    auto.forget()
    yield
    auto.forget()


class Stub:
    """Step seconds proportional to the bytes, times a factor per spec, with noise."""

    def __init__(self, factors: dict[str, float], noise: float, seed: int) -> None:
        self.factors = factors
        self.noise = noise
        self.rng = random.Random(seed)
        self.probes = 0

    def __call__(self, sizes, specs):
        self.probes += 1
        base = 1e-4 + 4e-10 * sum(sizes)
        return {
            s: [base * self.factors[s] * (1 + self.rng.uniform(-self.noise, self.noise)) for _ in range(7)]
            for s in specs
        }


def _samples(entry):
    measured = {}
    for sample in entry["samples"]:
        measured.setdefault((sample["spec"], sample["band"]), []).extend(sample["seconds"])
    return measured


def _assert_fastest_or_within_noise(entry):
    """The documented rule, checked on the entry's own samples and predictions."""
    from allreduce.selection.decide import within_noise

    bands = [b["band"] for b in entry["bands"]]
    predicted = {(s, b["band"]): c["predicted_s"] for b in entry["bands"] for s, c in b["cells"].items()}
    totals = entry["totals_s"]
    fastest = min(totals, key=totals.get)
    assert within_noise(entry["base"], fastest, bands, _samples(entry), predicted, 0.0), (
        entry["base"],
        totals,
    )


def test_a_tiny_budget_still_measures_every_candidate_before_it_caches(tmp_path):
    machine = FakeMachine(MACHINE)
    entry = tune_entry(CPUS, workload(), cache_dir=tmp_path, budget_s=0.001, measure=machine)
    measured = {spec for spec, _ in _samples(entry)}
    assert set(entry["candidates"]) <= measured | set(entry["failed"])
    assert cache.measured(entry)
    again = tune_entry(CPUS, workload(), cache_dir=tmp_path, budget_s=60, measure=FakeMachine(MACHINE))
    assert again["cached"] and again["spec"] == entry["spec"]


def test_an_unmeasured_cached_answer_is_neither_returned_nor_used_by_auto(tmp_path):
    sizes = workload(5, 12)
    first = tune_entry(CPUS, sizes, cache_dir=tmp_path, measure=FakeMachine(MACHINE), specs=SPECS)
    path = next(tmp_path.glob("*.json"))
    stored = json.loads(path.read_text())
    stored.update(spec="xring:1k:simple", samples=[])  # as a tuning that measured nothing
    path.write_text(json.dumps(stored))
    assert auto.resolve(CPUS, sizes, "float32", tmp_path) != "xring:1k:simple"
    machine = FakeMachine(MACHINE)
    again = tune_entry(CPUS, sizes, cache_dir=tmp_path, measure=machine, specs=SPECS)
    assert not again["cached"] and machine.asked and again["spec"] == first["spec"]


def test_refresh_measures_again_and_replaces_the_cached_answer(tmp_path, monkeypatch):
    from allreduce.tuning import measure

    machines = []

    def fake_measurer(devices, dtype):
        machines.append(FakeMachine(MACHINE, len(machines)))
        return machines[-1]

    monkeypatch.setattr(measure, "Measurer", fake_measurer)
    devices, sizes = CPUS[:2], [10, 1000, 100_000]
    allreduce.tune(devices, sizes, cache_dir=tmp_path, specs=SPECS)
    allreduce.tune(devices, sizes, cache_dir=tmp_path, specs=SPECS)
    assert len(machines) == 1  # the second came from the cache
    allreduce.tune(devices, sizes, cache_dir=tmp_path, specs=SPECS, refresh=True)
    assert len(machines) == 2 and machines[1].asked
    with pytest.raises(TypeError, match="refresh"):
        allreduce.tune(devices, sizes, cache_dir=tmp_path, refresh="yes")


def test_tune_refuses_devices_that_do_not_exist_before_measuring(tmp_path):
    with pytest.raises(ValueError, match=r"device '/cpu:98' does not exist"):
        allreduce.tune(["/cpu:98", "/cpu:99"], [1000], cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint16])
def test_tune_and_explain_take_numpy_integers_as_sizes(tmp_path, kind):
    sizes = [kind(np.prod((3, 5))), kind(1000)]
    entry = tune_entry(CPUS, sizes, cache_dir=tmp_path, measure=FakeMachine(MACHINE), specs=SPECS)
    assert entry["spec"] and all(type(n) is int for s in entry["samples"] for n in s["sizes"])
    plan = allreduce.explain("xring", CPUS, sizes)
    assert [r.elements for r in plan.rows] == [15, 1000]


@pytest.mark.parametrize("size", [True, np.bool_(True), 2.0, np.float32(3)])
def test_sizes_that_are_not_integral_numbers_are_refused(size):
    with pytest.raises(TypeError, match=r"sizes\[1\] must be an int"):
        allreduce.tune(CPUS, [4, size])
    with pytest.raises(TypeError, match=r"sizes\[1\] must be an int"):
        allreduce.explain("xring", CPUS, [4, size])


@pytest.mark.parametrize("seed", range(4))
def test_a_measurably_faster_spec_wins_over_the_preferred_one(tmp_path, seed):
    # simple comes first in the order of preference, but is 10 % slower than pscpu.
    stub = Stub({"simple": 1.10, "xring": 1.6, "pscpu": 1.0}, noise=0.03, seed=seed)
    entry = tune_entry(CPUS, workload(seed, 16), cache_dir=tmp_path, measure=stub, specs=SPECS)
    assert entry["base"] == "pscpu"
    _assert_fastest_or_within_noise(entry)


@pytest.mark.parametrize("seed", range(4))
def test_equal_specs_keep_the_preferred_one_on_every_run(tmp_path, seed):
    stub = Stub({"simple": 1.0, "xring": 1.6, "pscpu": 1.0}, noise=0.05, seed=seed)
    entry = tune_entry(CPUS, workload(seed, 16), cache_dir=tmp_path, measure=stub, specs=SPECS)
    assert entry["base"] == "simple"
    _assert_fastest_or_within_noise(entry)


def test_a_close_decision_gets_more_of_the_budget_than_a_clear_one(tmp_path):
    sizes = workload(2, 16)
    clear = Stub({"simple": 1.5, "xring": 2.0, "pscpu": 1.0}, noise=0.05, seed=1)
    close = Stub({"simple": 1.04, "xring": 2.0, "pscpu": 1.0}, noise=0.3, seed=1)
    tune_entry(CPUS, sizes, cache_dir=tmp_path / "clear", measure=clear, specs=SPECS)
    entry = tune_entry(CPUS, sizes, cache_dir=tmp_path / "close", measure=close, specs=SPECS)
    assert close.probes > clear.probes
    _assert_fastest_or_within_noise(entry)


def test_measuring_a_tuning_gives_no_retracing_warning(tmp_path):
    from allreduce.tuning.measure import Measurer

    seen = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # the test session keeps it at ERROR
    try:
        measure = Measurer(CPUS[:2], "float32", warmup=1, iters=2)
        for n in range(2):  # six specs traced one after another in each probe
            measure([10 + n, 100 + n], ["simple", "pscpu", "xring", "better", "xring#2", "pscpu#2"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [m for m in seen if "retracing" in m], seen


def test_bench_retune_measures_again_and_needs_tune(monkeypatch, capsys):
    from allreduce.bench.cli import main
    from allreduce.tuning import measure

    machines = []

    def fake_measurer(devices, dtype):
        machines.append(FakeMachine(MACHINE, len(machines)))
        return machines[-1]

    monkeypatch.setattr(measure, "Measurer", fake_measurer)
    argv = ["--tune", "--workload", "many-small", "--small-tensors", "4", "--devices", "2", "--no-progress"]
    assert main(argv) == 0 and main(argv) == 0
    assert len(machines) == 1 and "from the cache" in capsys.readouterr().out
    assert main([*argv, "--retune"]) == 0
    assert len(machines) == 2 and "from the cache" not in capsys.readouterr().out
    assert main(["--retune", "--quick"]) == 2
    assert "--retune" in capsys.readouterr().err


def test_explain_says_its_times_are_uncalibrated_guesses_until_a_tuning_fits_them(tmp_path):
    sizes = [10, 1000, 100_000]
    plan = allreduce.explain("pscpu", CPUS, sizes, cache_dir=tmp_path)
    assert not plan.calibrated
    assert "uncalibrated guesses" in plan.model and "an uncalibrated guess" in str(plan).splitlines()[-1]
    tune_entry(CPUS, sizes, cache_dir=tmp_path, measure=FakeMachine(MACHINE), specs=SPECS)
    plan = allreduce.explain("pscpu", CPUS, sizes, cache_dir=tmp_path)
    assert plan.calibrated and "uncalibrated" not in str(plan)
