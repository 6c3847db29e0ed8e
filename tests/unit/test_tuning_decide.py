"""The decision rules on synthetic measurements: noise, real gains, merging, bands."""

from __future__ import annotations

import random

import pytest

from allreduce.selection.bands import band_limit, band_of, bands_of, workload_bucket, workload_distance
from allreduce.selection.decide import GAIN, BandChoice, compose, decide, decide_predicted, ratio_interval


def noisy(median: float, spread: float, seed: int, count: int = 9) -> list[float]:
    rng = random.Random(seed)
    return [median * (1 + rng.uniform(-spread, spread)) for _ in range(count)]


def test_bands_are_powers_of_four_and_keep_a_workload_coarsely():
    assert [band_of(n) for n in (1, 2, 4, 5, 16, 17, 1024, 1025)] == [0, 1, 1, 2, 2, 3, 5, 6]
    assert band_limit(5) == 1024
    assert bands_of([3, 1000, 2, 70000]) == {1: [3, 2], 5: [1000], 9: [70000]}
    assert workload_bucket([3, 2, 2, 1000]) == {1: 2, 5: 0}
    assert workload_bucket([3] * 5) == workload_bucket([3] * 4)
    assert workload_distance({1: 2, 5: 0}, {1: 2, 5: 0}) == 0
    assert workload_distance({1: 2, 5: 0}, {1: 3, 7: 0}) == 1 + 2 + 2


def test_ratio_interval_holds_the_ratio_of_medians():
    low, high = ratio_interval(noisy(1.0, 0.05, 1), noisy(2.0, 0.05, 2))
    assert 0.45 < low <= 0.5 <= high < 0.55
    with pytest.raises(ValueError):
        ratio_interval([], [1.0])


def test_equal_specs_within_noise_keep_the_preferred_one_everywhere():
    bands = [1, 5, 9]
    measured = {}
    for b in bands:
        measured["simple", b] = noisy(1e-3, 0.1, b)
        measured["better", b] = noisy(1e-3, 0.1, 100 + b)
    for candidates in (["simple", "better"], ["better", "simple"]):
        decision = decide(candidates, bands, measured, {})
        assert decision.spec == candidates[0]
        assert {c.reason for c in decision.bands} == {"base"}


def test_a_band_switches_only_on_a_measured_gain_beyond_noise():
    bands = [1, 5, 9]
    measured = {("simple", b): noisy(1e-3, 0.01, b) for b in bands}
    measured["xring", 9] = noisy(0.7e-3, 0.01, 9)  # 30 % faster where both were measured
    measured["pscpu", 5] = noisy(0.97e-3, 0.01, 5)  # 3 %: below GAIN
    predicted = {("xring", b): 0.5e-3 for b in bands} | {("pscpu", b): 2e-3 for b in bands}
    decision = decide(["simple", "xring", "pscpu"], bands, measured, predicted)
    # xring is predicted faster in bands 1 and 5 but was not measured there: no switch.
    assert decision.base in ("simple", "xring")
    assert decision.spec in ("simple:1k:xring", "xring")
    assert [c.reason for c in decision.bands][:2] != ["measured", "measured"]


def test_a_switch_needs_a_gain_outside_the_noise():
    bands = [5, 9]
    measured = {("simple", b): noisy(1e-3, 0.01, b) for b in bands}
    wide = [0.5e-3, 1.5e-3, 0.6e-3, 1.4e-3, 0.8e-3]  # median 0.8e-3 but all over the place
    measured["xring", 9] = wide
    decision = decide(["simple", "xring"], bands, measured, {("xring", 5): 5e-3})
    assert decision.spec == "simple"
    tight = [0.8e-3 * (1 + 0.001 * i) for i in range(9)]
    measured["xring", 9] = tight
    decision = decide(["simple", "xring"], bands, measured, {("xring", 5): 5e-3})
    assert decision.spec == "simple:1k:xring"
    assert decision.bands[1] == BandChoice(
        9, "xring", "measured", pytest.approx(1 - 0.8e-3 * 1.004 / 1e-3, rel=0.01)
    )


def test_a_switch_must_pay_a_share_of_the_whole_step():
    bands = [1, 9]
    measured = {("simple", 1): noisy(1e-5, 0.001, 1), ("simple", 9): noisy(1e-2, 0.001, 9)}
    measured["xring", 1] = noisy(0.5e-5, 0.001, 2)  # half the time, of a band that is 0.1 % of the step
    decision = decide(["simple", "xring"], bands, measured, {("xring", 9): 2e-2})
    assert decision.spec == "simple"


def test_neighbouring_bands_with_one_choice_merge_and_the_last_range_is_open():
    choices = [
        BandChoice(1, "simple", "base"),
        BandChoice(3, "simple", "base"),
        BandChoice(6, "xring#2", "measured", 0.2),
        BandChoice(9, "xring#2", "measured", 0.2),
        BandChoice(11, "pscpu/pscpu", "measured", 0.1),
    ]
    assert compose(choices) == "simple:64:xring#2:256k:pscpu/pscpu"
    assert compose([BandChoice(4, "rechd", "base")]) == "rechd"
    with pytest.raises(ValueError):
        compose([])


def test_the_base_is_the_fastest_single_spec_by_measured_and_predicted_totals():
    bands = [1, 9]
    measured = {("xring", 1): [1e-3] * 5, ("simple", 1): [1e-3] * 5}
    predicted = {("xring", 9): 5e-3, ("simple", 9): 2e-3, ("rechd", 1): 1e-4}
    decision = decide(["xring", "simple", "rechd"], bands, measured, predicted)
    assert decision.base == "simple"
    assert set(decision.totals) == {"xring", "simple"}  # rechd has no estimate for band 9
    assert decision.totals["simple"] == pytest.approx(3e-3)
    lighter = decide(["xring", "simple"], bands, measured, predicted, overhead=0.5e-3)
    assert lighter.totals["simple"] == pytest.approx(2.5e-3)
    with pytest.raises(ValueError, match="every band"):
        decide(["rechd"], bands, {}, predicted)


def test_the_model_alone_switches_only_where_it_predicts_twice_the_gain():
    bands = [1, 9]
    predicted = {("xring", 1): 1e-3, ("xring", 9): 1e-2, ("simple", 9): 2e-2}
    predicted["simple", 1] = 1e-3 * (1 - 1.5 * GAIN)
    assert decide_predicted(["xring", "simple"], bands, predicted).spec == "xring"
    predicted["simple", 1] = 1e-3 * (1 - 3 * GAIN)
    decision = decide_predicted(["xring", "simple"], bands, predicted)
    assert decision.spec == "simple:4:xring"
    assert decision.bands[0].reason == "predicted"
    with pytest.raises(ValueError):
        decide_predicted(["rechd"], bands, {("rechd", 1): None})


def test_a_preferred_spec_beyond_the_tie_only_by_noise_stays_the_base():
    bands = [9, 11]
    measured = {("simple", b): noisy(1e-3, 0.02, b) for b in bands}
    measured |= {("pscpu", 9): [0.6e-3, 1.6e-3, 0.9e-3, 1.3e-3, 1.2e-3], ("pscpu", 11): noisy(1.1e-3, 0.3, 3)}
    assert decide(["pscpu", "simple"], bands, measured, {}).base == "pscpu"  # noisy: may be equal
    measured |= {("pscpu", b): noisy(1.12e-3, 0.01, 20 + b) for b in bands}
    assert decide(["pscpu", "simple"], bands, measured, {}).base == "simple"  # surely 12 % slower


def test_a_measured_difference_where_the_model_sees_none_is_noise():
    from allreduce.selection.decide import Doubt

    bands = [3, 11]
    measured = {(s, b): noisy(t, 0.01, b) for s, b, t in [("simple", 3, 30e-3), ("simple", 11, 50e-3)]}
    measured["pscpu", 3] = noisy(20e-3, 0.01, 7)  # 10 ms less, on a band of passing tensors
    predicted = {("simple", 3): 30e-3, ("pscpu", 3): 30e-3, ("simple", 11): 50e-3, ("pscpu", 11): 60e-3}
    common = {3: 29e-3, 11: 5e-3}  # band 3 is all passing tensors: nothing to win there
    assert decide(["simple", "pscpu"], bands, measured, predicted).spec == "pscpu:64:simple"
    doubt = Doubt(error=0.2, common=common)
    assert decide(["simple", "pscpu"], bands, measured, predicted, doubt=doubt).spec == "simple"
    assert doubt.possible("simple", "pscpu", 11, predicted, 80e-3)  # 20 % of 100 ms of own time
    assert doubt.possible("simple", "rechd", 3, predicted, 80e-3)  # no prediction: measuring decides
