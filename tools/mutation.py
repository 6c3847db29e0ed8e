"""Mutation testing with mutmut: the pure layer, and the TensorFlow-emitting algorithm modules.

    python tools/mutation.py pure                # the planning layer (__layer__ = "pure"), with
                                                 # each algorithm's declaration module
    python tools/mutation.py algorithms          # every module the graph layer binds a builder from
    python tools/mutation.py pure algorithms --max-children 2   # both (tox -e mutation)

Each target runs in its own copy of the tree, ``build/mutation/<target>/``, so that the two
never share mutmut's state and the working tree is left alone. Each target sets the files
to mutate and the tests to run in ``[tool.mutmut]`` (see :func:`targets`): nothing here
lists modules by hand, so a new pure module or a new algorithm is picked up as it is.
Hypothesis runs the derandomized ``ci`` profile, so that a run's verdicts repeat, without
shrinking (``tests/conftest.py``).

A mutant counts as detected when a test fails or times out. The pure layer's score is
detected / all mutants; the algorithm modules' is detected / the mutants of modules whose
code can run without a GPU (NCCL's cannot), both printed (a mutant no test reaches counts
as a survivor). The run prints every survivor's
diff, writes them to ``build/mutation/<target>/report.md``, and exits 1 when a score is
below its floor (``FLOORS``, or ``--min-score``). ``docs/mutation.md`` explains the
survivors of the last full run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def say(*parts: object, stream: TextIO = sys.stdout) -> None:
    stream.write(" ".join(str(p) for p in parts) + "\n")
    stream.flush()


STAGING = ROOT / "build" / "mutation"


def _source_tree() -> None:
    """Imports the package from the source tree."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))


def algorithm_modules() -> dict[str, bool]:
    """Each module the graph layer binds a builder or reducer from
    (``allreduce.graph.algorithms.BUILDERS``, which needs TensorFlow), with whether its code
    can run on a machine without GPUs (some algorithm of it runs on CPUs, or its graph runs
    soft-placed onto one CPU)."""
    _source_tree()
    from allreduce.graph.algorithms import BUILDERS, HIERARCHICAL
    from allreduce.planning import registry

    composable = [n for n in registry.algorithm_names() if registry.get_algorithm(n).composable]
    # The hierarchical builder, which every A/B pair shares, is judged by a pair's entry.
    names = {name: name for name in BUILDERS if name != HIERARCHICAL}
    if composable:
        names[HIERARCHICAL] = f"{composable[0]}/{composable[0]}"
    runnable: dict[str, bool] = {}
    for key, name in names.items():
        info = registry.get_algorithm(name)
        cpu = registry.CPU in info.device_types or info.emulable
        for function in BUILDERS[key]:
            if function is not None:
                module = _path_of(function.__module__)
                runnable[module] = runnable.get(module, False) or cpu
    return runnable


def _tests(*patterns: str) -> list[str]:
    return sorted({str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern)})


def targets() -> dict[str, dict[str, object]]:
    """Settings that differ from ``[tool.mutmut]`` per target; the files come from the
    modules' own declarations (``tools/layers.py``: the pure layer, which holds each
    algorithm's declaration module) and the graph layer's table of builders."""
    sys.path.insert(0, str(ROOT / "tools"))
    from layers import pure_paths

    return {
        "pure": {
            "only_mutate": pure_paths(),
            "pytest_add_cli_args_test_selection": _tests(
                "tests/unit/test_pure_*.py",
                "tests/unit/test_compression_pure.py",
                "tests/unit/test_spec.py",
                "tests/unit/test_seed_defects.py",
                "tests/unit/test_spmd_pure.py",
                "tests/unit/test_spmd_bench_merge.py",
                "tests/properties/test_spec_properties.py",
                "tests/properties/test_cost_properties.py",
                "tests/properties/test_cost_local_steps.py",
                "tests/properties/test_planning_properties.py",
            ),
        },
        "algorithms": {
            "only_mutate": sorted(algorithm_modules()),
            "pytest_add_cli_args_test_selection": _tests(
                "tests/properties/test_algorithm_properties.py",
                "tests/properties/test_gpu_named_graphs.py",
                "tests/properties/test_compression_properties.py",
                "tests/unit/test_compression.py",
                "tests/unit/test_compression_paths.py",
                "tests/unit/test_algorithm_graphs.py",
                "tests/unit/test_algorithms_base.py",
                "tests/unit/test_api_errors.py",
                "tests/unit/test_validation.py",
            ),
            # A mutant that hangs a graph would otherwise hold a worker for minutes: the
            # limit is this many times the clean tests' time, in CPU seconds.
            "timeout_multiplier": 5.0,
        },
    }


TARGETS = ("pure", "algorithms")
#: The lowest score each target may have: of all mutants for the pure layer, of the
#: mutants whose code can run without a GPU for the algorithm modules.
FLOORS = {"pure": 95.0, "algorithms": 90.0}
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def pyproject_for(target: str) -> str:
    """The project's pyproject.toml with ``[tool.mutmut]`` set for ``target``."""
    text = (ROOT / "pyproject.toml").read_text()
    config = dict(tomllib.loads(text)["tool"]["mutmut"])
    config.update(targets()[target])
    # Drop the table from its header to the next table header (or the end).
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\s*$.*?(?=^\[|\Z)", "", text).rstrip() + "\n"
    table = "\n".join(f"{key} = {toml_value(value)}" for key, value in config.items())
    return f"{text}\n[tool.mutmut]\n{table}\n"


def stage(target: str, keep: bool) -> Path:
    """Copies what the tests need into ``build/mutation/<target>``."""
    where = STAGING / target
    if where.exists() and not keep:
        shutil.rmtree(where)
    where.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for folder in ("src", "tests"):
        shutil.copytree(ROOT / folder, where / folder, ignore=ignore, dirs_exist_ok=True)
    shutil.copy2(ROOT / "conftest.py", where / "conftest.py")
    (where / "pyproject.toml").write_text(pyproject_for(target))
    return where


def mutmut(
    where: Path, *args: str, log: Path | None = None, examples: int = 60
) -> subprocess.CompletedProcess:
    # tests/conftest.py turns ALLREDUCE_MUTATION_EXAMPLES into a derandomized profile
    # without shrinking.
    env = dict(
        os.environ,
        HYPOTHESIS_PROFILE="ci",
        ALLREDUCE_MUTATION_EXAMPLES=str(examples),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    command = [sys.executable, "-m", "mutmut", *args]
    if log is None:
        return subprocess.run(command, cwd=where, env=env, capture_output=True, text=True, check=True)
    with log.open("w") as out:
        return subprocess.run(command, cwd=where, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def results(where: Path) -> dict[str, str]:
    """Mutant name -> status, for every mutant of the last run."""
    listing = mutmut(where, "results", "--all", "true").stdout
    found = {}
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def module_of(mutant: str) -> str:
    """``allreduce.planning.spec`` for ``allreduce.planning.spec.x_parse__mutmut_3`` or
    ``...xǁClassǁmethod__mutmut_1``."""
    return re.split(r"\.x[_\u01c1]", mutant, maxsplit=1)[0]


def _path_of(module: str) -> str:
    """``src/allreduce/graph/algorithms/ring.py`` for ``allreduce.graph.algorithms.ring``."""
    return "src/" + module.replace(".", "/") + ".py"


def _retest_names(target: str, where: Path) -> list[str]:
    """The mutants of the last run that no test detected, with the current tests copied in
    (the mutated sources stay as they are: a source change needs a full run)."""
    if not (where / "mutants").is_dir():
        raise SystemExit(f"[{target}] --retest needs an earlier run in {where.relative_to(ROOT)}")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for copy in (where / "tests", where / "mutants" / "tests"):
        shutil.copytree(ROOT / "tests", copy, ignore=ignore, dirs_exist_ok=True)
    return sorted(name for name, status in results(where).items() if status not in DETECTED)


def run_target(target: str, args: argparse.Namespace) -> float:
    where = STAGING / target if args.retest else stage(target, args.keep)
    names = _retest_names(target, where) if args.retest else []
    log = where / ("mutmut-retest.log" if args.retest else "mutmut.log")
    say(f"[{target}] mutmut run in {where.relative_to(ROOT)} (log: {log.relative_to(ROOT)})")
    start = time.monotonic()
    run = mutmut(
        where, "run", "--max-children", str(args.max_children), *names, log=log, examples=args.examples
    )
    minutes = (time.monotonic() - start) / 60
    if run.returncode != 0:
        say(log.read_text()[-4000:])
        raise SystemExit(f"[{target}] mutmut run failed with exit code {run.returncode}")
    statuses = results(where)
    counts = Counter(statuses.values())
    total = len(statuses)
    detected = sum(n for status, n in counts.items() if status in DETECTED)
    survivors = sorted(name for name, status in statuses.items() if status not in DETECTED)
    scored, killed = total, detected
    lines = [f"# Mutation run: {target}", ""]
    lines.append(
        f"{detected}/{total} mutants detected ({100.0 * detected / max(total, 1):.1f} %) in {minutes:.1f} min"
    )
    if target == "algorithms":
        cpu = {m for m, runnable in algorithm_modules().items() if runnable}
        runnable = {n: s for n, s in statuses.items() if _path_of(module_of(n)) in cpu}
        scored, killed = len(runnable), sum(s in DETECTED for s in runnable.values())
        share = 100.0 * killed / max(scored, 1)
        lines.append(f"algorithms: {killed} of {scored} CPU-runnable mutants killed ({share:.1f} %)")
    score = 100.0 * killed / scored if scored else 0.0
    lines.append("by status:")
    lines += [f"- {status}: {n}" for status, n in sorted(counts.items())]
    lines += ["", "| module | detected | total |", "| --- | --- | --- |"]
    per_module: dict[str, Counter] = {}
    for name, status in statuses.items():
        per_module.setdefault(module_of(name), Counter())[status in DETECTED] += 1
    for module, c in sorted(per_module.items()):
        lines.append(f"| {module} | {c[True]} | {c[True] + c[False]} |")
    lines += ["", f"## Survivors ({len(survivors)})", ""]
    for name in survivors:
        diff = mutmut(where, "show", name).stdout
        changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        lines += [f"### {name} ({statuses[name]})", "```diff", *changed, "```", ""]
    report = "\n".join(lines)
    (where / "report.md").write_text(report)
    say(report)
    return score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument(
        "--min-score", type=float, default=None, help=f"fail below this percentage (default: {FLOORS})"
    )
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="parallel mutants")
    parser.add_argument("--examples", type=int, default=60, help="Hypothesis examples per property")
    parser.add_argument("--keep", action="store_true", help="reuse the previous run's results (incremental)")
    parser.add_argument(
        "--retest",
        action="store_true",
        help="run the last run's undetected mutants again against the current tests (sources unchanged)",
    )
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    if importlib.util.find_spec("mutmut") is None:
        parser.error("mutmut is not installed here: pip install 'mutmut>=3.8' (tox -e mutation does)")
    failed = []
    for target in args.targets or list(TARGETS):
        score = run_target(target, args)
        floor = FLOORS[target] if args.min_score is None else args.min_score
        say(f"[{target}] mutation score {score:.1f} % (floor {floor:.0f} %)")
        if score < floor:
            failed.append(f"{target} ({score:.1f} % < {floor:.0f} %)")
    if failed:
        say(f"mutation score below its floor: {', '.join(failed)}", stream=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
