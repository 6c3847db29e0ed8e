"""The test suite's fork server (tests/forkserver.py) starts processes as a fresh
interpreter would: arguments, environment, folder, streams, exit status, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import forkserver

pytestmark = pytest.mark.skipif(not forkserver.ENABLED, reason="ALLREDUCE_TEST_NO_FORK=1")


def test_a_command_gets_its_arguments_environment_folder_and_exit_status(tmp_path: Path):
    code = "import os, sys; print(sys.argv[1:], os.environ['MARK'], os.getcwd()); sys.exit(3)"
    done = forkserver.run(
        [sys.executable, "-c", code, "a", "b"], cwd=tmp_path, env={**os.environ, "MARK": "m1"}, timeout=60
    )
    assert done.returncode == 3
    assert done.stdout == f"['a', 'b'] m1 {tmp_path}\n"


def test_a_module_a_script_and_stdin_run_as_python_runs_them(tmp_path: Path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint(__name__, sys.argv[1:])\n")
    assert forkserver.run([sys.executable, str(script), "x"], timeout=60).stdout == "__main__ ['x']\n"
    done = forkserver.run([sys.executable, "-m", "json.tool"], input='{"a":1}', timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["{", '"a":', "1", "}"]
    done = forkserver.run([sys.executable, "-"], input="print(6 * 7)\n", timeout=60)
    assert (done.returncode, done.stdout) == (0, "42\n")


def test_an_uncaught_error_prints_its_traceback_and_exits_1():
    done = forkserver.run([sys.executable, "-c", "raise ValueError('boom')"], timeout=60)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ValueError: boom" in done.stderr


def test_signals_end_a_process_as_they_end_a_fresh_one():
    done = forkserver.run([sys.executable, "-c", "raise KeyboardInterrupt"], timeout=60)
    assert done.returncode == -signal.SIGINT
    process = forkserver.popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout.readline() == b"up\n"
    assert os.getpgid(process.pid) == process.pid  # a session of its own
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == -signal.SIGTERM
    process.stdout.close()


def test_a_worker_given_its_callers_pid_names_the_server_and_ends_with_its_caller(tmp_path: Path):
    # What allreduce.cluster.worker and allreduce.spmd._child check: their parent is alive
    # and is the pid they were given.
    out = tmp_path / "worker.pid"
    worker = (
        "import os, sys, time\n"
        f"open({str(out)!r}, 'w').write(f'{{os.getpid()}} {{os.getppid()}} {{sys.argv[-1]}}')\n"
        "time.sleep(60)\n"
    )
    caller = (
        "import os, sys, time\n"
        "from tests import forkserver\n"
        f"forkserver.popen([sys.executable, '-c', {worker!r}, str(os.getpid())], path=sys.argv[1])\n"
        f"while not os.path.exists({str(out)!r}): time.sleep(0.05)\n"
    )
    done = forkserver.run(
        [sys.executable, "-c", caller, forkserver.server_path()], cwd=Path.cwd(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    pid, parent, given = map(int, out.read_text().split())
    assert parent == given == forkserver._server[0].pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the worker outlived its caller"
