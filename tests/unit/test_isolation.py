"""The leak check of tests/conftest.py fails a run that leaves threads or processes behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
FORKSERVER = CONFTEST.with_name("forkserver.py")

LEAKS = {
    "clean": """
import subprocess, sys, threading

def test_clean():
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
""",
    "thread": """
import threading, time

def test_leaks_a_thread():
    threading.Thread(target=time.sleep, args=(3,), name="sleeper").start()
""",
    "daemon": """
import threading

stop = threading.Event()

def watch():
    stop.wait(30)

watch.__module__ = "allreduce.fake"

def test_leaks_a_library_daemon_thread():
    threading.Thread(target=watch, name="watchdog", daemon=True).start()
""",
    "process": """
import subprocess, sys

def test_leaks_a_process(tmp_path_factory):
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    with open({pid_file!r}, "w") as f:
        f.write(str(process.pid))
""",
}


def run_inner(tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").touch()
    shutil.copy(FORKSERVER, tmp_path / "tests" / "forkserver.py")
    pid_file = tmp_path / "pid"
    (tmp_path / "test_inner.py").write_text(LEAKS[name].replace("{pid_file!r}", repr(str(pid_file))))
    env = dict(os.environ, ALLREDUCE_LEAK_GRACE_S="0.5")
    env.pop("ALLREDUCE_SKIP_LEAK_CHECK", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        str(tmp_path),
    ]
    try:
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_clean_run_passes(tmp_path: Path) -> None:
    result = run_inner(tmp_path, "clean")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("thread", "thread 'sleeper' (daemon=False) running time.sleep"),
        ("daemon", "thread 'watchdog' (daemon=True) running allreduce.fake.watch"),
        ("process", "import time; time.sleep(60)"),
    ],
)
def test_a_leak_fails_the_run_naming_what_was_left(tmp_path: Path, name: str, fragment: str) -> None:
    result = run_inner(tmp_path, name)
    assert result.returncode != 0
    assert "the test run left these running" in result.stdout
    assert fragment in result.stdout
