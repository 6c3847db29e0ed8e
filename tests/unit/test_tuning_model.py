"""The step model: its terms, fitting on synthetic samples, and its JSON form."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from allreduce.planning.cost_model import (
    DEFAULT,
    FEATURES,
    Model,
    Sample,
    bucket_costs,
    fit,
    nnls,
    overhead_terms,
)
from allreduce.planning.spec import parse_all_reduce_spec

CPUS = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(4)]
WORKERS = [f"/job:worker/replica:0/task:{t}/device:CPU:{i}" for t in range(2) for i in range(2)]
SPECS = ["xring", "rechd", "pscpu", "simple", "torus", "xring#2"]

#: A made-up machine: every term matters, none is the default.
TRUE = Model(
    {
        "call": 4e-4,
        "tensor": 1e-5,
        "ops": 3e-6,
        "alpha:shared": 2e-6,
        "beta:shared": 1e-11,
        "gamma:CPU": 5e-11,
        "memory:CPU": 2e-11,
    }
)


def true_seconds(model: Model, spec: str, sizes: list[int], devices=CPUS) -> float:
    costs = bucket_costs(parse_all_reduce_spec(spec), devices, sizes, 4)
    return model.step_seconds(costs, devices, len(sizes))


def workload(seed: int, count: int) -> list[int]:
    rng = random.Random(seed)
    return [int(math.exp(rng.uniform(0, math.log(4 << 20)))) + 1 for _ in range(count)]


def test_nnls_solves_a_nonnegative_system_and_clips_what_would_be_negative():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert nnls(a, np.array([2.0, 3.0, 5.0])) == pytest.approx([2.0, 3.0])
    assert nnls(a, np.array([-1.0, 3.0, 2.0])) == pytest.approx([0.0, 2.5])


def test_a_fit_recovers_a_machine_from_its_own_samples_and_predicts_sizes_it_never_saw():
    train = [
        Sample(s, tuple(sz), true_seconds(TRUE, s, sz))
        for s in SPECS
        for sz in ([7, 90], [50_000], [3_000_000])
    ]
    model = fit(train, CPUS, 4)
    assert model.samples == len(train)
    for spec in SPECS:
        for sizes in ([1000], [200_000, 3], [700_000, 1_500_000]):
            predicted = model.step_seconds(
                bucket_costs(parse_all_reduce_spec(spec), CPUS, sizes, 4), CPUS, len(sizes)
            )
            assert predicted == pytest.approx(true_seconds(TRUE, spec, sizes), rel=0.05), (spec, sizes)


def test_terms_no_sample_uses_keep_the_prior():
    train = [Sample("simple", (1000,), true_seconds(TRUE, "simple", [1000]))]
    model = fit(train, CPUS, 4)
    for unused in ("beta:remote", "alpha:local", "gamma:GPU", "call:remote"):
        assert model.params[unused] == DEFAULT.params[unused]


def test_an_algorithm_far_off_the_shared_fit_gets_a_factor_of_its_own():
    slow = Model(TRUE.params, {"rechd": 3.0})
    train = [
        Sample(s, tuple(sz), true_seconds(slow, s, sz))
        for s in SPECS
        for sz in ([7, 90], [50_000], [3_000_000])
    ]
    model = fit(train, CPUS, 4)
    assert set(model.factors) == {"rechd"}
    assert model.factors["rechd"] == pytest.approx(3.0, rel=0.1)
    assert true_seconds(model, "rechd", [123_456]) == pytest.approx(
        true_seconds(slow, "rechd", [123_456]), rel=0.1
    )


def test_a_fit_without_a_usable_sample_is_a_value_error():
    with pytest.raises(ValueError, match="no sample"):
        fit([Sample("xring", (10,), 0.0)], CPUS, 4)


def test_steps_across_workers_pay_the_remote_call_and_tensor_terms():
    assert overhead_terms(CPUS, 3) == {"call": 1.0, "tensor": 12.0, "tensor:remote": 0.0}
    assert overhead_terms(WORKERS, 3) == {"call:remote": 1.0, "tensor": 0.0, "tensor:remote": 12.0}
    remote = Model({"call:remote": 1.0, "tensor:remote": 0.5})
    assert remote.overhead(WORKERS, 2) == 1.0 + 0.5 * 8
    assert remote.overhead(CPUS, 2) == 0.0


def test_a_model_round_trips_through_json_and_refuses_nonsense():
    model = Model({"call": 1e-4, "ops": 2e-6}, {"rechd": 1.5}, samples=12)
    assert Model.from_json(model.to_json()) == model
    for bad in ({}, {"params": {"call": -1.0}}, {"params": {"call": float("nan")}}, {"params": []}):
        with pytest.raises(ValueError):
            Model.from_json(bad)


def test_every_feature_a_schedule_yields_is_a_term_of_the_model():
    seen = set()
    for devices in (CPUS, WORKERS, [d.replace("CPU", "GPU") for d in CPUS]):
        for spec in [*SPECS, "pscpu/xring", "better/pscpu"]:
            for cost in bucket_costs(parse_all_reduce_spec(spec), devices, [10, 5_000_000], 4):
                seen |= set(cost.terms)
    assert seen <= set(FEATURES)
    assert set(DEFAULT.params) == set(FEATURES)


def test_a_pack_adds_the_copies_that_join_and_split_it():
    alone = bucket_costs(parse_all_reduce_spec("simple"), CPUS, [100, 100], 4)
    packed = bucket_costs(parse_all_reduce_spec("simple"), CPUS, [100, 100], 4, pack_max_bytes=1024)
    assert len(alone) == 2 and len(packed) == 1
    single = bucket_costs(parse_all_reduce_spec("simple"), CPUS, [200], 4)[0].terms
    assert packed[0].terms["memory:CPU"] == single["memory:CPU"] + 4 * 200 * 4 * len(CPUS)
