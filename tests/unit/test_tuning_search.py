"""The tuning loop against synthetic machines: what it measures, what it returns."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from allreduce.planning import registry
from allreduce.planning.cost_model import Model, bucket_costs
from allreduce.planning.spec import parse_all_reduce_spec
from allreduce.tuning.search import Search, next_probe, run
from allreduce.tuning.tuner import MAX_SHARE, tune_entry

CPUS = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(4)]
MACHINE = Model(
    {"call": 4e-4, "tensor": 1e-5, "ops": 3e-6, "alpha:shared": 2e-6, "gamma:CPU": 5e-11, "memory:CPU": 2e-11}
)


def workload(seed: int = 7, count: int = 48) -> list[int]:
    rng = random.Random(seed)
    return [int(math.exp(rng.uniform(0, math.log(4 << 20)))) + 1 for _ in range(count)]


class FakeMachine:
    """Step times from a model, with a few percent of noise; counts what it was asked."""

    def __init__(self, model: Model, seed: int = 0, extra: dict[str, float] | None = None) -> None:
        self.model = model
        self.rng = random.Random(seed)
        self.extra = extra or {}
        self.asked: list[tuple[tuple[int, ...], tuple[str, ...]]] = []

    def seconds(self, spec: str, sizes) -> float:
        # better costs as simple does (a test may hide its formula from the tuner).
        costs = bucket_costs(parse_all_reduce_spec(spec.replace("better", "simple")), CPUS, list(sizes), 4)
        base = Model(self.model.params).step_seconds(costs, CPUS, len(sizes))
        large = sum(n for n in sizes if n > 1 << 20)
        return base - self.extra.get(spec, 0.0) * large * 1e-9

    def __call__(self, sizes, specs):
        self.asked.append((tuple(sizes), tuple(specs)))
        return {
            s: [self.seconds(s, sizes) * (1 + self.rng.uniform(-0.02, 0.02)) for _ in range(7)] for s in specs
        }


def test_a_tuning_measures_at_most_a_quarter_and_is_within_five_percent_of_the_best_single_spec(tmp_path):
    sizes = workload()
    machine = FakeMachine(MACHINE)
    entry = tune_entry(CPUS, sizes, cache_dir=tmp_path, measure=machine)
    assert entry["cells"] <= MAX_SHARE * entry["exhaustive_cells"]
    assert len({(sizes, spec) for sizes, specs in machine.asked for spec in specs}) == entry["cells"]
    singles = {s: machine.seconds(s, sizes) for s in entry["candidates"]}
    best = min(singles.values())
    assert machine.seconds(entry["spec"], sizes) <= 1.05 * best


def test_the_same_machine_gives_the_same_spec_on_reruns(tmp_path):
    sizes = workload(3)
    specs = {
        tune_entry(CPUS, sizes, cache_dir=tmp_path / str(i), measure=FakeMachine(MACHINE, i))["spec"]
        for i in range(5)
    }
    assert len(specs) == 1


def test_an_algorithm_without_a_formula_is_tuned_by_measurement_alone(tmp_path, monkeypatch):
    info = registry.get_algorithm("better")
    monkeypatch.setitem(registry._REGISTRY, "better", dataclasses.replace(info, cost=None))
    sizes = [3_000_000, 2_500_000, 10, 20]
    machine = FakeMachine(
        MACHINE, extra={"better": 2.0}
    )  # much faster on large tensors, unknown to the model
    entry = tune_entry(CPUS, sizes, cache_dir=tmp_path, measure=machine, budget_s=30)
    measured = {spec for _, specs in machine.asked for spec in specs}
    assert "better" in measured
    assert "better" in entry["spec"]
    assert all(band["cells"]["better"]["predicted_s"] is None for band in entry["bands"])


def test_a_spec_that_fails_is_never_chosen(tmp_path):
    machine = FakeMachine(MACHINE)

    def measure(sizes, specs):
        out = machine(sizes, specs)
        out["simple"] = None  # as if it gave a wrong result
        return out

    entry = tune_entry(
        CPUS, workload(5, 12), cache_dir=tmp_path, measure=measure, specs=["simple", "xring", "pscpu"]
    )
    assert "simple" not in entry["spec"]
    assert "simple" in entry["failed"]


def first_cells(search):
    """The cells of the calibration probes and of every candidate's first measurement."""
    from allreduce.tuning.search import _calibration

    fresh = Search(list(search.candidates), list(search.bands))
    fresh.predicted = search.predicted
    cells = {(spec, band) for band, specs in _calibration(fresh) for spec in specs}
    return cells | {
        min((c for c in search.seen if c[0] == spec), key=lambda c: c[1])
        for spec in search.candidates
        if all(spec != c[0] for c in cells)
    }


def test_the_search_stops_at_its_deadline_and_at_its_cell_budget():
    search = Search(["xring", "simple"], [1, 5, 9])
    calls = []

    now = [0.0]

    def measure(band, specs):
        calls.append(band)
        now[0] += 1.0  # each probe takes a second by this clock
        return {s: [1e-3] for s in specs}

    def flat(measured):
        return {(s, b): 1e-3 for s in ("xring", "simple", "pscpu") for b in (1, 5, 9, 11)}

    # Calibration and a first cell of every candidate are measured whatever the deadline.
    run(search, measure, flat, max_cells=100, deadline=-1.0, overhead=lambda: 0.0)
    mandatory = len(calls)
    assert mandatory >= 1 and {spec for spec, _ in search.seen} == {"xring", "simple"}
    search, now[0], before = Search(["xring", "simple"], [1, 5, 9]), 0.0, len(calls)
    run(
        search,
        measure,
        flat,
        max_cells=100,
        deadline=mandatory + 1.5,
        overhead=lambda: 0.0,
        clock=lambda: now[0],
    )
    assert len(calls) - before == mandatory + 1  # then one more: the second would end past the deadline
    search = Search(["xring", "simple", "pscpu"], [1, 5, 9, 11])
    run(search, measure, flat, max_cells=2, deadline=1e9, overhead=lambda: 0.0)
    assert search.cells == len(first_cells(search))  # none beyond the mandatory ones


def test_next_probe_pairs_the_base_with_challengers_on_the_heaviest_band():
    search = Search(["simple", "xring", "rechd"], [1, 9])
    search.predicted = {
        ("simple", 1): 1e-4,
        ("simple", 9): 1e-2,
        ("xring", 1): 2e-4,
        ("xring", 9): 0.9e-2,
        ("rechd", 1): 5e-4,
        ("rechd", 9): 5e-2,
    }
    band, specs = next_probe(search, 0.0)
    assert band == 9
    assert specs[0] in ("simple", "xring")
    assert "rechd" not in specs
    search.measured = {(s, b): [v] for (s, b), v in search.predicted.items()}
    assert next_probe(search, 0.0) is None


@pytest.mark.parametrize("band_count", [1, 2])
def test_few_bands_still_measure_the_two_likeliest(tmp_path, band_count):
    sizes = [100, 200, 300] if band_count == 1 else [100, 3_000_000]
    machine = FakeMachine(MACHINE)
    entry = tune_entry(CPUS, sizes, cache_dir=tmp_path, measure=machine)
    assert entry["cells"] >= 2


def test_close_single_specs_are_measured_again_on_the_heaviest_bands():
    from allreduce.tuning.search import _refinement

    search = Search(["simple", "better", "xring"], [1, 5, 9])
    search.predicted = {("simple", 1): 1e-3, ("simple", 5): 4e-3, ("simple", 9): 6e-3}
    search.predicted |= {("better", b): 1.02 * t for (_, b), t in list(search.predicted.items())}
    search.predicted |= {("xring", b): 3 * t for (s, b), t in list(search.predicted.items()) if s == "simple"}
    probes = _refinement(search, 0.0)
    assert [band for band, _ in probes] == [9, 5]  # 6 ms and 4 ms of 11 ms: past 80 %
    assert all(sorted(specs) == ["better", "simple"] for _, specs in probes)
    search.predicted |= {("better", b): 2 * search.predicted["simple", b] for b in (1, 5, 9)}
    assert _refinement(search, 0.0) == []


def test_candidates_across_workers_add_hierarchical_pairs_and_leave_out_collectives():
    from allreduce.selection.candidates import MAX_PAIRS, candidate_specs

    workers = [f"/job:worker/replica:0/task:{t}/device:CPU:{i}" for t in range(2) for i in range(2)]
    found = candidate_specs(workers, lambda s: None)
    assert "pscpu/pscpu" in found and "collective" not in found and "nccl/xring" not in found
    pairs = [s for s in found if "/" in s]
    assert 1 <= len(pairs) <= MAX_PAIRS + 1
    assert all(registry.get_algorithm(p.split("/")[0]).reducer for p in pairs)
    assert "/" not in "".join(candidate_specs(CPUS, lambda s: None))
    gpus = [f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(2)]
    assert "nccl" in candidate_specs(gpus, lambda s: None)
    assert "nccl" not in candidate_specs(gpus, lambda s: None, logical_split=True)


def test_every_band_switch_is_measured_once_more_before_it_is_decided():
    from allreduce.tuning.search import _confirmations

    search = Search(["simple", "xring"], [5, 9])
    search.measured = {
        (s, b): [1e-3 * (1 + 0.001 * i) for i in range(7)] for s in ("simple", "xring") for b in (5, 9)
    }
    assert _confirmations(search, 0.0) == []
    search.measured["xring", 5] = [3e-3 * (1 + 0.001 * i) for i in range(7)]
    search.measured["xring", 9] = [0.5e-3 * (1 + 0.001 * i) for i in range(7)]
    assert _confirmations(search, 0.0) == [(9, ["simple", "xring"])]
