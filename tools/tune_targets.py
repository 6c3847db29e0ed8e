"""Measures allreduce.tune against its targets on a mixed-size workload, side by side.

    python tools/tune_targets.py                        # 4 logical CPUs
    python tools/tune_targets.py --workers 2 --devices 2 # 2 workers x 2 CPUs (local cluster)
    python tools/tune_targets.py --reruns 10 --json out.json

One run, one process: it tunes the workload (48 tensors, 1 to 4M elements, log-uniform)
in a fresh cache within the budget, then measures the tuned spec, every single candidate
spec and the default ``xring`` on the whole workload in one round-robin
(``allreduce.measure.driver.run_case``), and every candidate on every size band (the
exhaustive sweep the tuning avoided) to find the fitted model's error on the cells it
did not measure. It times a cache hit and an ``auto`` resolution, and with ``--reruns``
tunes again in fresh caches to count how often the same spec comes back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def workload(seed: int, count: int = 48, largest: int = 4 << 20) -> list[int]:
    """``count`` element counts, log-uniform between 1 and ``largest``."""
    rng = random.Random(seed)
    return [max(1, round(math.exp(rng.uniform(0, math.log(largest))))) for _ in range(count)]


def measure_all(devices, sizes, specs, iters, warmup=2):
    """Median seconds of one step of each spec on ``sizes``, side by side."""
    from allreduce.measure.cases import Case
    from allreduce.measure.contenders import SpecContender
    from allreduce.tuning.measure import Measurer

    setup = Measurer(devices, "float32").setup
    from allreduce.measure.driver import run_case

    case = Case("workload", tuple((s,) for s in sizes), "float32")
    results = run_case(
        case, [SpecContender(s, required=False) for s in specs], setup, warmup=warmup, iters=iters
    )
    return {r.name: (r.time_s if r.timed and r.ok else None) for r in results}


def _median(values):
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def model_error(entry, devices, sizes, iters):
    """The exhaustive band sweep the tuning avoided, and three median relative errors of
    the cost model on cells it was not fitted on: the tuning's model on the bands it did
    not measure of the algorithms it measured, the same on every unmeasured cell, and a
    model fitted on the sweep's even bands predicting its odd ones."""
    from allreduce.planning.cost_model import Model, Sample, fit
    from allreduce.selection.workload import Workload

    model = Model.from_json(entry["model"])
    work = Workload(devices, sizes, 4)
    measured = {(s["spec"], s["band"]) for s in entry["samples"]}
    tried = {spec for spec, _ in measured}
    sweep = {}
    for band, members in work.bands.items():
        for spec, seconds in measure_all(devices, members, entry["candidates"], iters).items():
            if seconds is not None:
                sweep[spec, band] = seconds

    def error(m, cells):
        found = [abs(work.predict(m, s, b) - t) / t for (s, b), t in cells.items() if work.predict(m, s, b)]
        return (statistics.median(found) if found else float("nan")), len(found)

    unmeasured = {k: v for k, v in sweep.items() if k not in measured}
    same_algorithms = {k: v for k, v in unmeasured.items() if k[0] in tried}
    even = [Sample(s, tuple(work.bands[b]), t) for (s, b), t in sweep.items() if b % 2 == 0]
    odd = {k: v for k, v in sweep.items() if k[1] % 2 == 1}
    halves = fit(even, devices, 4)
    return {
        "tuning_model_on_its_algorithms": error(model, same_algorithms),
        "tuning_model_on_every_unmeasured_cell": error(model, unmeasured),
        "sweep_even_bands_on_odd_bands": error(halves, odd),
        "swept_cells": len(sweep),
    }


def run(devices, args) -> dict:
    from allreduce.selection import auto
    from allreduce.tuning.tuner import tune_entry

    sizes = workload(args.seed)
    report: dict = {"devices": devices, "sizes": sizes, "budget_s": args.budget}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        entry = tune_entry(devices, sizes, budget_s=args.budget, cache_dir=folder)
        report["tune_s"] = time.perf_counter() - started
        started = time.perf_counter()
        hit = tune_entry(devices, sizes, budget_s=args.budget, cache_dir=folder)
        report["cache_hit_s"] = time.perf_counter() - started
        assert hit["cached"] and hit["spec"] == entry["spec"]
        auto.forget()
        started = time.perf_counter()
        resolved = auto.resolve(devices, sizes, "float32", folder)
        report["auto_first_s"] = time.perf_counter() - started
        started = time.perf_counter()
        auto.resolve(devices, sizes, "float32", folder)
        report["auto_again_s"] = time.perf_counter() - started
        assert resolved == entry["spec"]
    report.update(
        spec=entry["spec"],
        base=entry["base"],
        cells=entry["cells"],
        exhaustive_cells=entry["exhaustive_cells"],
        candidates=entry["candidates"],
        bands=[(b["band"], b["tensors"], b["spec"], b["reason"]) for b in entry["bands"]],
    )
    print(
        f"tuned {entry['spec']!r} (base {entry['base']}) in {report['tune_s']:.1f} s, "
        f"{entry['cells']}/{entry['exhaustive_cells']} cells; "
        f"cache hit {report['cache_hit_s'] * 1e3:.2f} ms, "
        f"auto {report['auto_first_s'] * 1e3:.2f} ms, again {report['auto_again_s'] * 1e6:.0f} us",
        flush=True,
    )
    specs = list(dict.fromkeys([entry["spec"], "xring", *entry["candidates"]]))
    rounds = [measure_all(devices, sizes, specs, args.iters) for _ in range(args.rounds)]
    whole = {s: _median([r[s] for r in rounds]) for s in specs}
    singles = {s: t for s, t in whole.items() if s in entry["candidates"] and t is not None}
    best = min(singles, key=singles.get)
    report["whole_ms"] = {s: (t * 1e3 if t else None) for s, t in whole.items()}
    report["best_single"] = best
    # Ratios within each round-robin, against the spec fastest over all rounds, then their median.
    report["tuned_over_best"] = statistics.median(r[entry["spec"]] / r[best] for r in rounds)
    report["tuned_over_xring"] = statistics.median(r[entry["spec"]] / r["xring"] for r in rounds)
    report["best_over_xring"] = statistics.median(r[best] / r["xring"] for r in rounds)
    shown = {s: round(t * 1e3, 2) for s, t in whole.items() if t}
    print(f"whole workload (ms, median of {args.rounds} round-robins):", shown, flush=True)
    print(
        f"tuned/best single ({best}) {report['tuned_over_best']:.3f}; "
        f"tuned/xring {report['tuned_over_xring']:.3f}; best/xring {report['best_over_xring']:.3f}",
        flush=True,
    )
    if args.model_error:
        errors = model_error(entry, devices, sizes, args.iters)
        report["model_error"] = errors
        for name, value in errors.items():
            if isinstance(value, tuple):
                print(
                    f"model median error, {name.replace('_', ' ')}: {value[0]:.1%} over {value[1]} cells",
                    flush=True,
                )
    if args.reruns:
        found = Counter()
        for i in range(args.reruns):
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                again = tune_entry(devices, sizes, budget_s=args.budget, cache_dir=folder)
                print(f"rerun {i}: {again['spec']!r} in {time.perf_counter() - started:.1f} s", flush=True)
                found[again["spec"]] += 1
        report["reruns"] = dict(found)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4, help="devices (per worker with --workers)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--iters", type=int, default=15, help="timed steps per spec of the reference runs")
    parser.add_argument("--rounds", type=int, default=3, help="round-robins of the whole workload")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reruns", type=int, default=0)
    parser.add_argument("--no-model-error", dest="model_error", action="store_false")
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    sys.path.insert(0, str(ROOT / "src"))
    import allreduce

    with ExitStack() as stack:
        if args.workers > 1:
            from allreduce.cluster import local_cluster

            cluster = stack.enter_context(local_cluster(args.workers, args.devices, op_timeout_s=300))
            devices = [d for worker in cluster.devices for d in worker]
        else:
            devices = allreduce.logical_devices(args.devices)
        report = run(devices, args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
