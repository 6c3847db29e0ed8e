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
from allreduce.measure.contenders import Setup, SpecContender
from allreduce.measure.driver import count_wrong, largest_error
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
    # Sums of small integers are exact in float16 too; the bound is reported all the same.
    assert compressed["max_error"] == 0 and compressed["wrong"] == 0
    largest = float(cases.expected_sum(256, 4).max())
    assert compressed["bound"] == allreduce.error_bound("xring", 4, "fp16").limit(largest, largest)
    assert by_name["1KiB", "xring"]["bound"] == 0 and by_name["1KiB", "xring"]["compression"] == "none"
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
