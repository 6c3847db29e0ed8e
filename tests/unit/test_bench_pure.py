"""allreduce-bench's parts that build no graph: options, cases, checks, formatting,
the verdict, and the registry as the only list of algorithms."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from allreduce.bench import preflight
from allreduce.bench.options import (
    BATCH_PACKING,
    FULL,
    NO_PACKING,
    QUICK,
    Options,
    UsageError,
    resolve_options,
)
from allreduce.bench.report import format_number, format_rows, format_summary
from allreduce.measure import cases
from allreduce.measure.catalog import format_spec_list
from allreduce.measure.checks import count_wrong
from allreduce.measure.contenders import FLOOR, OURS, PEER
from allreduce.measure.driver import Result
from allreduce.planning.registry import NAMED_HIERARCHICAL, algorithm_names, get_algorithm
from tests.oracle import exact_sum

ROOT = Path(__file__).resolve().parents[2]


# Options: one object, defaults in one place.


def test_options_without_arguments_are_the_full_sweep_unpacked():
    options = resolve_options({})
    assert options == Options()
    assert (options.min_bytes, options.max_bytes, options.factor) == (
        FULL.min_bytes,
        FULL.max_bytes,
        FULL.factor,
    )
    assert (options.warmup, options.iters) == (FULL.warmup, FULL.iters)
    assert (options.pack_max_bytes, options.pack_max_group) == (NO_PACKING.max_bytes, NO_PACKING.max_group)


def test_quick_and_batch_workloads_change_only_the_defaults_not_given():
    quick = resolve_options({"quick": True, "iters": 7})
    assert (quick.max_bytes, quick.factor, quick.warmup) == (QUICK.max_bytes, QUICK.factor, QUICK.warmup)
    assert quick.iters == 7
    batch = resolve_options({"workload": "many-small", "pack_max_group": 5})
    assert batch.pack_max_bytes == BATCH_PACKING.max_bytes and batch.pack_max_group == 5
    assert batch.cases() == [cases.many_small_case("float32", 200, 1000)]


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"model": "VGG16"}, "--workload model"),
        ({"min_bytes": 2 << 20, "max_bytes": 1 << 20}, "exceeds"),
        ({"min_bytes": 3, "max_bytes": 3}, "one float32 element"),
        ({"workers": 2, "device_type": "gpu"}, "--workers"),
        ({"dtype": "bfloat16", "devices": 22}, "at most 21"),
    ],
)
def test_contradicting_options_are_usage_errors(given, words):
    with pytest.raises(UsageError, match=words):
        resolve_options(given)


def test_options_hold_every_default_once():
    # The parser's namespace only holds the options given: every other value is a
    # field default of Options or a preset.
    from allreduce.bench.cli import build_parser

    parsed = vars(build_parser().parse_args([]))
    assert parsed == {}
    names = {f.name for f in dataclasses.fields(Options)}
    dests = {a.dest for a in build_parser()._actions if a.dest not in ("help", "version", "list_specs")}
    assert dests == names


# Cases and their exact sums.


def test_sweep_sizes_step_by_the_factor_and_end_at_the_maximum():
    assert cases.sweep_sizes(1024, 16 << 20, 16) == [1024, 16 << 10, 256 << 10, 4 << 20, 16 << 20]
    assert cases.sweep_sizes(1, 8, 2) == [1, 2, 4, 8]
    made = cases.sweep_cases(2, 64, 4, "float32")
    assert [c.nbytes for c in made] == [8, 32, 64]
    assert [c.name for c in made] == ["8B", "32B", "64B"]
    with pytest.raises(ValueError, match="factor"):
        cases.sweep_sizes(1, 8, 1)
    with pytest.raises(ValueError, match="exceeds"):
        cases.sweep_sizes(8, 1, 2)
    with pytest.raises(ValueError, match="dtype"):
        cases.sweep_cases(1, 8, 2, "complex64")


@pytest.mark.parametrize("dtype", sorted(cases.DTYPE_SIZES))
def test_expected_sum_is_exact_in_every_dtype_up_to_its_device_limit(dtype):
    import tensorflow as tf

    n = min(cases.max_exact_devices(dtype), 40)
    np_dtype = tf.as_dtype(dtype).as_numpy_dtype
    inputs = [cases.input_pattern(50, d, tensor=2).astype(np_dtype) for d in range(n)]
    oracle = exact_sum([x.astype(np.float64) for x in inputs])
    expected = cases.expected_sum(50, n, tensor=2)
    np.testing.assert_array_equal(expected.astype(np.float64), oracle)
    np.testing.assert_array_equal(expected.astype(np_dtype).astype(np.float64), oracle)


def test_count_wrong_sees_one_wrong_element_and_one_differing_bit():
    case = cases.Case("t", ((2, 3),), "float32")
    want = np.arange(6, dtype=np.float32)
    good = want.reshape(2, 3)
    assert count_wrong([[good], [good.copy()]], [want], case) == (0, 0)
    bad = good.copy()
    bad[1, 2] = 99
    assert count_wrong([[good], [bad]], [want], case) == (1, 1)
    signed = good.copy()
    signed[0, 0] = -0.0  # equal to the expected 0.0, but not bitwise identical
    assert count_wrong([[good], [signed]], [want], case) == (0, 1)
    nan = good.copy()
    nan[0, 1] = np.nan
    assert count_wrong([[nan]], [want], case)[0] == 1
    assert count_wrong([[good.reshape(-1)]], [want], case) == (6, 0)
    assert count_wrong([[]], [want], case) == (6, 0)


# Checks before measuring.


def test_memory_check_refuses_a_case_larger_than_what_is_available():
    options = Options(devices=4)
    big = cases.sweep_cases(1 << 30, 1 << 30, 2, "float32")
    need = preflight.needed_memory(big, 4, "cpu")
    # Host inputs, expected sums, input tensors and one step's outputs: at least 3n + 1 copies.
    assert need >= (3 * 4 + 1) << 30
    preflight.check_memory(big, options, available=need)
    with pytest.raises(UsageError, match="memory"):
        preflight.check_memory(big, options, available=need - 1)
    assert preflight.needed_memory(big, 4, "gpu") < need  # outputs stay on the GPUs


def test_available_memory_is_read_from_the_machine():
    available = preflight.available_memory()
    assert available is None or available > 0


def test_output_check_refuses_a_folder_and_a_path_below_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for path in (tmp_path, afile / "r.json"):
        with pytest.raises(UsageError, match="cannot write"):
            preflight.check_output("--json", str(path))
    fresh = tmp_path / "new" / "r.json"
    preflight.check_output("--json", str(fresh))
    assert fresh.parent.is_dir() and not fresh.exists()
    preflight.check_output("--json", str(afile))
    assert afile.read_text() == "x"


@pytest.mark.parametrize(
    ("name", "fmt"), [("p.svg", "svg"), ("p.PDF", "pdf"), ("p", "png"), ("p.png", "png")]
)
def test_plot_formats_are_the_ones_matplotlib_writes(name, fmt):
    assert preflight.check_plot_format(name) == fmt


def test_plot_format_that_matplotlib_cannot_write_is_refused():
    with pytest.raises(UsageError, match=r"\.docx"):
        preflight.check_plot_format("picture.docx")


# Formatting and the verdict.


@pytest.mark.parametrize(
    ("value", "decimals", "text"),
    [
        (3.0841, 3, "3.084"),
        (0.0123456, 3, "0.0123"),
        (0.000419, 3, "0.000419"),
        (4.2e-7, 3, "4.2e-07"),
        (0.0, 3, "0.000"),
        (251.34, 1, "251.3"),
        (0.04, 1, "0.04"),
        (float("nan"), 3, "-"),
    ],
)
def test_small_numbers_keep_three_significant_digits(value, decimals, text):
    assert format_number(value, decimals) == text
    if not math.isnan(value) and value:
        assert float(text) == pytest.approx(value, rel=5e-3)


def _result(name, kind=OURS, *, required=True, samples=(1e-3,), **fields) -> Result:
    case = cases.Case("1KiB", ((256,),), "float32")
    return Result(case, name, kind, 4, required=required, samples_s=list(samples), **fields)


def test_a_required_contender_that_did_not_run_fails_with_its_whole_reason():
    reason = "ValueError: needs 8 devices\n" + "offered: " + ", ".join(f"/device:CPU:{i}" for i in range(40))
    skipped = _result("pscpu#8", skipped=reason, samples=())
    benign = _result("tf-v1:rechd", PEER, required=False, skipped="needs a power of two", samples=())
    peer = _result("numpy", FLOOR, required=False)
    results = [skipped, benign, peer]
    assert skipped.failed and not benign.failed and not peer.failed
    summary = format_summary(results)
    assert "All results exact" not in summary and "FAILED: 1 contender" in summary
    for line in reason.splitlines():
        assert line in summary
    row = format_rows(results).splitlines()[0]
    assert "NOT RUN:" in row and len(row) < 250


def test_summary_lists_errors_and_wrong_results_once_per_contender_and_reason():
    a = _result("xring", error="RuntimeError: boom")
    b = dataclasses.replace(a, case=cases.Case("4KiB", ((1024,),), "float32"))
    wrong = _result("trivial", wrong=5, replica_mismatch=2)
    summary = format_summary([a, b, wrong])
    assert "#   xring (1KiB, 4KiB): error: RuntimeError: boom" in summary
    assert "trivial (1KiB): 5 wrong element(s), 2 differing between replicas" in summary


def test_an_interrupted_run_says_so():
    summary = format_summary([_result("xring")], interrupted=True)
    assert "INTERRUPTED" in summary


# The registry is the only list of algorithms.


def test_spec_list_describes_every_algorithm_of_the_registry():
    text = format_spec_list()
    for name in [*algorithm_names(), *NAMED_HIERARCHICAL]:
        info = get_algorithm(name)
        assert f"  {name} " in text and info.summary in text
        if info.shards:
            assert info.shards in text
    assert "A/B" in text


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.parametrize(
    "path",
    [
        *sorted(p for p in (ROOT / "src/allreduce/bench").glob("*.py") if p.name != "peers.py"),
        ROOT / "benchmarks/test_allreduce.py",
    ],
    ids=lambda p: p.name,
)
def test_the_benchmark_names_no_algorithm_of_its_own(path):
    # peers.py pairs each TensorFlow builder with the spec of ours that runs the same
    # algorithm: a fact about TensorFlow, not a list of contenders.
    names = set(algorithm_names()) | set(NAMED_HIERARCHICAL)
    named = {s for s in _string_constants(path) if s.split("#")[0] in names}
    assert not named, f"{path.name} names {sorted(named)}: take them from allreduce.planning.registry"
