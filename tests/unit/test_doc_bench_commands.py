"""Every ``allreduce-bench`` command that README.md and docs/*.md show in a shell block
runs and exits 0.

Each command keeps its own options and is shrunk by options appended after them (the
last occurrence of an option wins):

* every measuring run: ``--warmup 0 --iters 1 --no-progress``;
* a sweep: ``--min-bytes 4K --max-bytes 4K`` (one size);
* a model: ``--model MobileNet --dtype float16`` (83 weights instead of ResNet50's 214,
  at half the bytes: any model shows whether the devices were split before it was built);
* a command that names no specs: ``--specs pscpu``; no peers: ``--no-peers``;
* ``--tune``: ``--tune-budget 10``.

Building the model is what used to start TensorFlow before the devices were split, so
each ``--workload model`` command runs in a process of its own (a fork of the test
process's fork server, which has started no TensorFlow context). The other
single-process commands share one process, and the ``--workers`` commands another (one
local cluster, or one set of ``--spmd`` worker processes, after the other); the
processes run side by side, with a cache folder of their own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import forkserver
from tests.unit.test_readme import README, ROOT, shell_lines

DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
#: Options that answer without measuring.
NO_MEASURING = {"--help", "--version", "--list-specs"}
#: Commands that need workers started elsewhere, run by the tests of those workers
#: (tests/multiworker/test_worker_command.py, tests/ray_workers/test_ray_bench.py).
ELSEWHERE = {"--connect", "--ray"}
#: Processes running at once.
PARALLEL = 3
TIMEOUT_S = 600

# Runs main() on each argv of a JSON list (file argv[1]) and writes each one's status
# and the end of its output to argv[2].
_RUNNER = r"""
import contextlib, io, json, sys
from allreduce.bench.cli import main
runs = []
for argv in json.load(open(sys.argv[1])):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = main(argv)
        except SystemExit as done:
            status = done.code
        except BaseException as exc:
            status = f"raised {type(exc).__name__}: {exc}"
    runs.append({"argv": argv, "status": status, "out": out.getvalue()[-3000:]})
json.dump(runs, open(sys.argv[2], "w"))
"""


def documented_commands() -> list[list[str]]:
    """The arguments of every ``allreduce-bench`` line of a shell block, once each, in
    document order."""
    found: dict[str, list[str]] = {}
    for path in DOCUMENTS:
        for line in shell_lines(path):
            # A comment starts with " # " ("xring#2" is a spec).
            words = shlex.split(re.sub(r"\s+#\s.*$", "", line.strip().removeprefix("$ ")))
            if words and words[0] == "allreduce-bench":
                found.setdefault(shlex.join(words), words[1:])
    return list(found.values())


def shrunk(args: list[str]) -> list[str]:
    """``args`` with the options of the module docstring appended."""
    if NO_MEASURING & set(args):
        return args
    extra = ["--warmup", "0", "--iters", "1", "--no-progress"]
    model = ["--model", "MobileNet", "--dtype", "float16"]
    extra += model if "model" in args else ["--min-bytes", "4K", "--max-bytes", "4K"]
    if "--specs" not in args:
        extra += ["--specs", "pscpu"]
    if "--peers" not in args:
        extra += ["--no-peers"]
    if "--tune" in args:
        extra += ["--tune-budget", "10"]
    return [*args, *extra]


def groups(commands: list[list[str]]) -> list[list[list[str]]]:
    """Commands by the process they run in (see the module docstring)."""
    model = [[shrunk(c)] for c in commands if "model" in c]
    workers = [shrunk(c) for c in commands if "--workers" in c]
    rest = [shrunk(c) for c in commands if "model" not in c and "--workers" not in c]
    return [*model, workers, rest]


def _run_all(batches: list[list[list[str]]], folder: Path) -> list[dict]:
    env = {**os.environ, "ALLREDUCE_CACHE_DIR": str(folder / "cache"), "XDG_CACHE_HOME": str(folder)}
    waiting = list(enumerate(batches))
    running: list[tuple[subprocess.Popen, Path]] = []
    runs: list[dict] = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while waiting or running:
            while waiting and len(running) < PARALLEL:
                i, batch = waiting.pop(0)
                (folder / f"in{i}.json").write_text(json.dumps(batch))
                command = [
                    sys.executable,
                    "-c",
                    _RUNNER,
                    str(folder / f"in{i}.json"),
                    str(folder / f"out{i}"),
                ]
                proc = forkserver.popen(
                    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                running.append((proc, folder / f"out{i}"))
            proc, out = running[0]
            output, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            running.pop(0)
            assert proc.returncode == 0 and out.exists(), output.decode()[-3000:]
            runs += json.loads(out.read_text())
    finally:
        for proc, _ in running:
            proc.kill()
            proc.communicate()
    return runs


def test_the_documents_show_the_commands_the_issue_named() -> None:
    commands = [shlex.join(c) for c in documented_commands()]
    assert "--workload model --model ResNet50" in commands
    assert "--tune --workload model --model ResNet50" in commands
    assert "--specs auto,xring --workload model --explain" in commands
    assert any(c.startswith("--workers 2 --devices 2") for c in commands)
    assert any(c.startswith("--spmd --workers 4 --devices 1") for c in commands)
    assert "--spmd --workers 2 --devices 2 --tune" in commands


def test_shrinking_appends_and_keeps_the_command() -> None:
    args = ["--specs", "xring", "--min-bytes", "16M", "--max-bytes", "64M", "--peers", "numpy"]
    assert shrunk(args)[: len(args)] == args
    sweep = ["--min-bytes", "4K", "--max-bytes", "4K"]
    assert shrunk(args)[len(args) :] == ["--warmup", "0", "--iters", "1", "--no-progress", *sweep]
    assert shrunk(["--version"]) == ["--version"]


@pytest.mark.multiworker
@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_every_documented_bench_command_exits_0(tmp_path: Path) -> None:
    commands = [c for c in documented_commands() if not ELSEWHERE & set(c)]
    runs = _run_all(groups(commands), tmp_path)
    assert len(runs) == len(commands)
    failed = [
        f"allreduce-bench {shlex.join(r['argv'])}: status {r['status']}\n{r['out']}"
        for r in runs
        if r["status"] != 0
    ]
    assert not failed, "\n\n".join(failed)
