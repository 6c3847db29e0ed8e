"""Leak checks (a test run must not leave threads or processes behind), and the
Hypothesis profile of mutation runs.

TensorFlow starts daemon threads of its own (and C++ threads Python never sees), so the
check looks at what tests and the library can leak:

- non-daemon Python threads, which keep a process from exiting;
- daemon threads running code from ``allreduce`` or ``tests`` (watchdogs, readers);
- processes started during the run: each process started during the session inherits
  a marker in its environment, so a worker left behind is found even after its parent
  exits and it is re-parented.

A leak fails the run with a list of what was left. Set ``ALLREDUCE_SKIP_LEAK_CHECK=1``
to turn the check off (for example while debugging with a live cluster).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from tests import forkserver

# Mutation runs (tools/mutation.py) set ALLREDUCE_MUTATION_EXAMPLES: the ``ci`` profile
# (derandomized, so that verdicts repeat) with that many examples, no example database
# and no shrinking, since a mutant needs one failing example, not a minimal one.
if os.environ.get("ALLREDUCE_MUTATION_EXAMPLES"):
    settings.register_profile(
        "mutation",
        settings.get_profile("ci"),
        max_examples=int(os.environ["ALLREDUCE_MUTATION_EXAMPLES"]),
        database=None,
        phases=(Phase.explicit, Phase.generate),
    )
    settings.load_profile("mutation")

MARKER = "ALLREDUCE_TEST_RUN"
#: How long processes and threads that are shutting down get to finish.
GRACE_S = float(os.environ.get("ALLREDUCE_LEAK_GRACE_S", "10"))
_OWN_CODE = ("allreduce", "tests")


def _thread_code(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    if target is not None:
        return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
    return f"{type(thread).__module__}.{type(thread).__qualname__}"


def leaked_threads(before: set[int]) -> list[str]:
    """Threads started since ``before`` that may not outlive a test run."""
    leaks = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.ident in before or not thread.is_alive():
            continue
        code = _thread_code(thread)
        if not thread.daemon or code.startswith(_OWN_CODE):
            leaks.append(f"thread {thread.name!r} (daemon={thread.daemon}) running {code}")
    return leaks


def marked_processes(marker: str) -> list[str]:
    """Live processes other than this one whose environment holds ``MARKER=marker``."""
    if not Path("/proc").is_dir():
        return []
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found.append(f"process {entry.name} ({command.strip()[:200]})")
    return found


def _wait_for(check: Callable[[], list[str]], timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    leaks = check()
    while leaks and time.monotonic() < deadline:
        time.sleep(0.2)
        leaks = check()
    return leaks


@pytest.fixture(scope="session", autouse=True)
def private_tuning_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Points the tuning cache (``spec="auto"``, ``allreduce.tune``) at a directory of
    the test run, for this process and the processes it starts: no test reads or writes
    the user's own cache."""
    previous = os.environ.get("ALLREDUCE_CACHE_DIR")
    os.environ["ALLREDUCE_CACHE_DIR"] = str(tmp_path_factory.mktemp("tuning-cache"))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ALLREDUCE_CACHE_DIR", None)
        else:
            os.environ["ALLREDUCE_CACHE_DIR"] = previous


@pytest.fixture(scope="session", autouse=True)
def no_leaked_threads_or_processes() -> Iterator[None]:
    """Fails the run if it leaves threads or processes running."""
    if os.environ.get("ALLREDUCE_SKIP_LEAK_CHECK") == "1":
        yield
        return
    marker = uuid.uuid4().hex
    previous = os.environ.get(MARKER)
    os.environ[MARKER] = marker
    threads_before = {t.ident for t in threading.enumerate() if t.ident is not None}
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MARKER, None)
        else:
            os.environ[MARKER] = previous
    leaks = _wait_for(lambda: leaked_threads(threads_before) + marked_processes(marker), GRACE_S)
    if leaks:
        pytest.fail("the test run left these running:\n  " + "\n  ".join(leaks), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def forked_workers(no_leaked_threads_or_processes: None) -> Iterator[None]:
    """The package's worker processes are forks of a process that has already imported
    TensorFlow (``tests/forkserver.py``), started on first use and ended before the leak
    check. Tests of the package's own process handling start real processes
    (:func:`real_processes`)."""
    from allreduce.cluster import spawn

    saved = spawn.START, spawn.PYTHON
    forkserver.install()
    try:
        yield
    finally:
        spawn.START, spawn.PYTHON = saved
        forkserver.stop()


@pytest.fixture
def real_processes() -> Iterator[None]:
    """This test's worker processes start as fresh interpreters (under coverage when the
    run measures it), as they do outside the tests."""
    from allreduce.cluster import spawn

    saved = spawn.START, spawn.PYTHON
    spawn.START, spawn.PYTHON = spawn._popen, [sys.executable, *forkserver.coverage_prefix()]
    try:
        yield
    finally:
        spawn.START, spawn.PYTHON = saved
