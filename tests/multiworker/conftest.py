"""Shared code of the multi-worker tests: the client process and checks on child processes.

Tests that connect to a cluster run ``_client.py`` in a fresh process (connecting changes
a process's eager context for good, and this pytest process has its own 8 logical CPUs).
Under coverage, the client runs under ``coverage run --parallel-mode`` with the same
settings, and pytest-cov combines its data with this process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CLIENT = Path(__file__).with_name("_client.py")
ROOT = Path(__file__).resolve().parents[2]


def _coverage_prefix() -> list[str]:
    try:
        import coverage
    except ImportError:  # pragma: no cover
        return []
    current = coverage.Coverage.current()
    if current is None:
        return []
    config = current.config
    return [
        "-m",
        "coverage",
        "run",
        "--parallel-mode",
        f"--rcfile={config.config_file or ROOT / 'pyproject.toml'}",
        f"--data-file={os.path.abspath(config.data_file)}",
    ]


def run_client(scenario: str, args: dict, out_dir: Path, timeout_s: float) -> tuple[dict, dict]:
    """Runs one client scenario; returns its manifest and its arrays.

    Fails the test (with the client's output) if the client does not finish in
    ``timeout_s`` seconds or writes no result.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *_coverage_prefix(), str(CLIENT), scenario, json.dumps(args), str(out_dir)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"client {scenario} did not finish in {timeout_s} s; stderr:\n{err.stderr}")
    result = out_dir / "result.json"
    if done.returncode != 0 or not result.exists():
        pytest.fail(f"client {scenario} failed with status {done.returncode}; stderr:\n{done.stderr[-8000:]}")
    manifest = json.loads(result.read_text())
    if manifest.get("fatal"):
        pytest.fail(f"client {scenario} failed:\n{manifest['fatal']}\nstderr:\n{done.stderr[-4000:]}")
    with np.load(out_dir / "arrays.npz") as data:
        arrays = {key: data[key] for key in data.files}
    return manifest, arrays


def process_gone(pid: int) -> bool:
    """Whether the process has exited: no such pid, or only a zombie left for its parent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def wait_gone(pids: list[int], bound_s: float) -> list[int]:
    """Waits up to ``bound_s`` for the processes to vanish; returns those still there."""
    deadline = time.monotonic() + bound_s
    left = [p for p in pids if not process_gone(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if not process_gone(p)]
    return left
