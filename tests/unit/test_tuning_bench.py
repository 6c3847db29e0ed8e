"""allreduce-bench --tune, --explain and --specs auto, in this process."""

from __future__ import annotations

import json
import os

import pytest

from allreduce.bench.cli import build_parser, main
from allreduce.bench.tuning_report import format_tuning
from allreduce.selection import auto

TINY_RUN = ["--quick", "--max-bytes", "4096", "--iters", "2", "--warmup", "0", "--no-progress", "--no-peers"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLREDUCE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "false"))
    auto.forget()


def test_the_options_parse():
    args = vars(
        build_parser().parse_args(["--specs", "auto,xring", "--tune", "--tune-budget", "5", "--explain"])
    )
    assert args == {"specs": ("auto", "xring"), "tune": True, "tune_budget": 5.0, "explain": True}


def test_tune_prints_the_winner_per_band_against_every_single_spec_and_fills_the_cache(tmp_path, capsys):
    argv = ["--tune", "--workload", "many-small", "--small-tensors", "6", "--small-elements", "300"]
    assert main([*argv, "--devices", "2", "--tune-budget", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    head, _, columns, *rows = [line for line in out.splitlines() if line.startswith("#")]
    assert head.startswith("# tune: '") and "cells measured" in head
    assert columns.split()[1:5] == ["band", "tensors", "winner", "why"]
    assert rows[0].split()[1:3] == ["(256,1024]", "6"]  # the band's six tensors
    stored = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*.json")]
    assert len(stored) == 1 and stored[0]["spec"] in head


def test_format_tuning_marks_predicted_cells():
    entry = {
        "spec": "simple",
        "base": "simple",
        "candidates": ["simple", "xring"],
        "cells": 1,
        "exhaustive_cells": 2,
        "elapsed_s": 1.0,
        "budget_s": 60.0,
        "bands": [
            {
                "band": 5,
                "tensors": 3,
                "spec": "simple",
                "reason": "base",
                "cells": {"simple": {"measured_s": 1e-3}, "xring": {"measured_s": None, "predicted_s": 2e-3}},
            }
        ],
        "totals_s": {"simple": 1e-3, "xring": 2e-3},
    }
    text = format_tuning(entry)
    assert "1.00" in text and "~2.00" in text and "xring                 2.00 2.00x" in text


def test_explain_then_predicted_against_measured_and_auto_as_a_spec(capsys):
    assert main(["--specs", "auto,xring", "--explain", "--devices", "2", *TINY_RUN]) == 0
    out = capsys.readouterr().out
    assert "spec 'xring' on 2 devices, float32" in out
    assert "'auto': the cost model's choice" in out
    assert "# predicted against measured" in out and "median error" in out
    measured = [line.split() for line in out.splitlines() if line.startswith("  ")]
    names = {row[3] for row in measured if row[2] == "float32"}
    assert "xring" in names and len(names) == 2 and any(n.startswith("auto=") for n in names)


def test_auto_rows_say_which_spec_auto_became(tmp_path, capsys):
    from allreduce.measure.cases import sweep_cases
    from tests.strategies import cpu

    report = tmp_path / "r.json"
    assert main(["--specs", "auto", "--devices", "2", *TINY_RUN, "--json", str(report)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    devices = [cpu(0), cpu(1)]
    for case in sweep_cases(1024, 4096, 16, "float32"):
        became = auto.resolve(devices, [case.count], "float32")
        assert [row[3] for row in rows if row[0] == str(case.nbytes)] == [f"auto={became}"]
    results = json.loads(report.read_text())["results"]
    assert {(r["name"], r["spec"]) for r in results} == {("auto", "auto")}
    assert all(r["resolved"] == auto.resolve(devices, [r["count"]], "float32") for r in results)
