"""``allreduce-bench --compression``: rows per compression, the error and bound columns,
and a compressed result that counts as wrong only beyond its bound."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import allreduce
from allreduce.bench.cli import main
from allreduce.measure import cases
from allreduce.measure.checks import count_wrong, largest_error
from allreduce.measure.contenders import Setup, SpecContender
from tests.strategies import cpu

TINY_RUN = ["--quick", "--max-bytes", "4096", "--iters", "2", "--warmup", "0", "--no-progress", "--no-peers"]


@pytest.fixture(autouse=True)
def _keep_allocator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "false"))


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def test_each_spec_runs_with_each_compression_side_by_side(tmp_path, capsys) -> None:
    report = tmp_path / "r.json"
    argv = ["--specs", "xring,pscpu/xring", "--compression", "none,bf16,fp16-all", *TINY_RUN]
    assert main([*argv, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert [(r[3], r[4]) for r in rows if r[0] == "1024"] == [
        ("xring", "none"),
        ("xring", "bf16"),
        ("xring", "fp16-all"),
        ("pscpu/xring", "none"),
        ("pscpu/xring", "bf16"),
        ("pscpu/xring", "fp16-all"),
    ]
    results = json.loads(report.read_text())["results"]
    by_name = {(r["case"], r["name"]): r for r in results}
    compressed = by_name["1KiB", "xring (fp16-all)"]
    assert compressed["compression"] == "fp16-all" and compressed["spec"] == "xring"
    # The inputs round in float16: an error above 0, within the bound of the largest sum.
    largest = float(cases.rounding_sum(256, 4).max())
    assert compressed["bound"] == allreduce.error_bound("xring", 4, "fp16").limit(largest, largest)
    assert 0 < compressed["max_error"] <= compressed["bound"] and compressed["wrong"] == 0
    for name in ("xring", "pscpu/xring"):  # the same inputs, uncompressed: exact
        plain = by_name["1KiB", name]
        assert plain["bound"] == 0 and plain["max_error"] == 0 and plain["wrong"] == 0
        assert plain["compression"] == "none"
        bf16 = by_name["1KiB", f"{name} (bf16)"]
        assert 0 <= bf16["max_error"] <= bf16["bound"]
    assert "compressed ones within their error bound" in out


def test_an_unknown_compression_is_a_usage_error(capsys) -> None:
    assert main(["--compression", "none,int8", *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert "unknown compression 'int8'; known: none, bf16, fp16, bf16-all, fp16-all" in err


def test_a_compressed_result_is_wrong_only_beyond_its_bound() -> None:
    case = cases.Case("t", ((4,),), "float32")
    want = np.array([10.0, 20.0, 30.0, 0.0], dtype=np.float32)
    got = np.array([10.5, 20.0, 29.0, 0.0], dtype=np.float32)
    limits = [np.array([0.5, 0.5, 0.5, 0.0])]
    assert count_wrong([[got], [got.copy()]], [want], case, limits) == (2, 0)  # 1.0 > 0.5 on two devices
    assert count_wrong([[got]], [want], case, [np.full(4, 1.0)]) == (0, 0)
    assert count_wrong([[got]], [want], case) == (2, 0)  # without limits: exact
    nan = got.copy()
    nan[1] = np.nan
    assert count_wrong([[nan]], [want], case, [np.full(4, 1.0)]) == (1, 0)
    assert largest_error([[got], [want]], [want]) == 1.0
    assert np.isnan(largest_error([[got], [nan]], [want]))


def test_a_spec_contender_bounds_each_element_by_its_sum() -> None:
    case = cases.Case("t", ((6,),), "float32")
    setup = Setup(devices=tuple(cpu(i) for i in range(4)), device_type="CPU")
    expected = [cases.expected_sum(6, 4).astype(np.float32)]
    assert SpecContender("xring").tolerance(case, setup, expected) is None
    (limit,) = SpecContender("xring", compression="bf16-all").tolerance(case, setup, expected)
    bound = allreduce.error_bound("xring", 4, "bf16")
    np.testing.assert_array_equal(limit, bound.limit(expected[0].astype(np.float64), expected[0].max()))


def test_a_run_that_compresses_sums_inputs_that_round_exactly_without_compression() -> None:
    """Random multiples of 2**-12: bfloat16 and float16 round them, float32 sums them
    exactly in any order; other dtypes keep the integers."""
    from allreduce.measure.checks import make_inputs

    case = cases.Case("t", ((3000,),), "float32")
    devices = [cpu(i) for i in range(4)]
    inputs, (expected,) = make_inputs(case, devices, rounding=True)
    host = np.stack([tower[0] for tower in inputs.host]).astype(np.float64)
    assert np.all((host >= 0) & (host < 1)) and np.any(host != np.round(host))
    np.testing.assert_array_equal(host[0], cases.rounding_pattern(3000, 0))
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        total = np.zeros(3000, np.float32)
        for d in order:
            total += host[d].astype(np.float32)
        np.testing.assert_array_equal(total, expected)
    np.testing.assert_array_equal(expected, np.sum(host, axis=0))  # float64 oracle
    assert np.any(host.astype(np.float16).astype(np.float64) != host)
    bf16 = np.asarray(host.astype(np.float32)).view(np.uint32) & 0xFFFF
    assert np.any(bf16 != 0)  # bits below bfloat16's mantissa
    same, _ = make_inputs(case, devices, rounding=True)
    np.testing.assert_array_equal(same.host[2][0], inputs.host[2][0])  # a fixed seed
    integers, _ = make_inputs(cases.Case("t", ((30,),), "float16"), devices, rounding=True)
    np.testing.assert_array_equal(integers.host[1][0], cases.input_pattern(30, 1).astype(np.float16))
