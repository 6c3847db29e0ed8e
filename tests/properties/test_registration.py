"""An algorithm registered at run time through the public registration function is
picked up by everything that reads the registry: the property suite's helpers, the
benchmark's default specs, the cost model behind ``explain``, and tuning's candidates."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import allreduce
from allreduce.measure.contenders import default_specs
from allreduce.planning import roundings
from allreduce.planning.algorithms.simple import simple_cost
from allreduce.planning.registry import CPU, AlgorithmInfo, algorithm_names, register, unregister
from allreduce.selection.candidates import candidate_specs
from tests.cases import check_outcome, run_case
from tests.properties.test_algorithm_properties import cases
from tests.strategies import cpu

NAME = "toysum"
CPUS = [cpu(i) for i in range(4)]


def toy_all_reduce(values: list[tf.Tensor], devices: list[str], ctx: object) -> list[tf.Tensor]:
    """One add_n on the first device, copied to every device."""
    with tf.device(devices[0]):
        total = tf.add_n(values)
    results = []
    for device in devices:
        with tf.device(device):
            results.append(tf.identity(total))
    return results


@pytest.fixture
def toy() -> Iterator[AlgorithmInfo]:
    info = register(
        AlgorithmInfo(
            NAME,
            "one add_n on the first device (a test's algorithm)",
            toy_all_reduce,
            frozenset({CPU}),
            roundings=roundings.gather_roundings,
            cost=simple_cost,
        )
    )
    try:
        yield info
    finally:
        unregister(NAME)
    assert NAME not in algorithm_names()


def test_the_property_suites_cases_check_it_against_the_oracle(toy: AlgorithmInfo) -> None:
    @settings(max_examples=10, deadline=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        case = data.draw(cases(NAME))
        check_outcome(case, run_case(case))

    check()


def test_the_spec_language_and_the_api_know_it(toy: AlgorithmInfo) -> None:
    assert NAME in algorithm_names()
    assert allreduce.parse_all_reduce_spec(f"xring:1k:{NAME}")[1].alg == NAME
    tensors = []
    for i, device in enumerate(CPUS):
        with tf.device(device):
            tensors.append(tf.constant(np.arange(6, dtype=np.float32) * (i + 1)))
    outputs = allreduce.all_reduce(tensors, NAME)
    expected = np.arange(6, dtype=np.float64) * 10
    assert all(np.array_equal(o.numpy(), expected) for o in outputs)
    assert [o.device for o in outputs] == [t.device for t in tensors]


def test_the_benchmarks_defaults_include_it(toy: AlgorithmInfo) -> None:
    assert NAME in default_specs(CPUS)


def test_explain_predicts_it_with_its_cost_formula(toy: AlgorithmInfo) -> None:
    explanation = allreduce.explain(NAME, CPUS, [1000, 50])
    assert explanation.spec == NAME and len(explanation.rows) == 2
    assert explanation.predicted_s is not None and explanation.predicted_s > 0
    # Its formula is simple's, so the prediction is simple's too.
    assert explanation.predicted_s == allreduce.explain("simple", CPUS, [1000, 50]).predicted_s


def test_tuning_considers_it_and_can_choose_it(toy: AlgorithmInfo) -> None:
    assert NAME in candidate_specs(CPUS, lambda spec: None)
    chosen = allreduce.tune(CPUS[:2], [64], specs=[NAME], budget_s=20.0)
    assert chosen == NAME
