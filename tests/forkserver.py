"""Test processes forked from a server that has already imported TensorFlow.

A fresh Python process that imports TensorFlow and the package spends about 3.5 s of
CPU on it (about 5 s under coverage); the multi-worker, SPMD and command-line tests
start hundreds of them. Here one server per test process imports them once, and every
process the tests start through :func:`popen` or :func:`run`, or the package through
``allreduce.cluster.spawn`` (when :func:`install` has replaced ``spawn.START``), is a
fork of it, in a few milliseconds.

A forked process gets what a fresh one would: the caller's arguments, environment
(``PYTHONPATH`` included), working folder, standard streams and a session of its own when
asked; fresh signal handlers and exit handlers; ``sys.argv`` as Python sets it for ``-m``,
``-c`` or a script; and coverage measurement when the caller runs under coverage. Its
pid is real: the caller signals it as usual and learns its exit status from the server.

A forked process's own worker processes (``allreduce.cluster.spawn``) are forks of the
server too, unless the caller asks for real ones (``fork_workers=False``).

Processes are forked from the server, not from their caller. So that a worker still dies
with the process that started it, a pid given as the worker's last argument (how
``allreduce.cluster.worker`` and ``allreduce.spmd._child`` name their parent) is replaced
by the server's, whose death the kernel reports to it, and the child also ends itself
when that caller ends. Tests of the package's own process handling (a parent killed,
a worker that dies with it, no process left behind after Ctrl-C) start real processes.

The server itself is :mod:`tests.forkserver_main`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

#: ``ALLREDUCE_TEST_NO_FORK=1`` starts every process as a fresh interpreter instead (under
#: coverage when the run measures it), for comparison and debugging.
ENABLED = os.environ.get("ALLREDUCE_TEST_NO_FORK") != "1"
ROOT = Path(__file__).resolve().parents[1]
#: Frames a request: its length, then its JSON.
HEADER = struct.Struct("!I")


_server: tuple[subprocess.Popen, str] | None = None
_lock = threading.Lock()


def server_path() -> str:
    """The socket of this process's server, started on first use (it ends with this process)."""
    global _server
    with _lock:
        if _server is None or _server[0].poll() is not None:
            folder = tempfile.mkdtemp(prefix="allreduce-forkserver-")
            path = os.path.join(folder, "socket")
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
            env.pop("COVERAGE_PROCESS_START", None)
            with open(os.path.join(folder, "server.log"), "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tests.forkserver_main", path],
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    start_new_session=True,
                )
            if process.stdout.readline() != b"ready\n":
                raise RuntimeError("the fork server did not start")
            _server = process, path
        return _server[1]


def _coverage_settings() -> dict | None:
    try:
        import coverage
    except ImportError:  # pragma: no cover
        return None
    current = coverage.Coverage.current()
    if current is None:
        return None
    config = current.config
    rcfile = config.config_file or str(ROOT / "pyproject.toml")
    return {"rcfile": rcfile, "data_file": os.path.abspath(config.data_file)}


def _descriptor(value: int | IO[Any] | None, default: int, mode: str, text: bool) -> tuple[int, Any]:
    """``(descriptor for the child, our end)`` for a ``subprocess``-style stream argument."""
    if value is None:
        return os.dup(default), None
    if value == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDWR), None
    if value == subprocess.PIPE:
        read, write = os.pipe()
        if mode == "r":
            return read, os.fdopen(write, "w" if text else "wb")
        return write, os.fdopen(read, "r" if text else "rb")
    fd = value if isinstance(value, int) else value.fileno()
    return os.dup(fd), None


class ForkedProcess:
    """A process forked by the server: the part of :class:`subprocess.Popen` the package
    and the tests use (``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``,
    ``kill``, ``terminate``, ``stdin``, ``stdout``)."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        start_new_session: bool = False,
        text: bool = False,
        fork_workers: bool = True,
        path: str | None = None,
    ) -> None:
        self.args = list(args)
        if self.args and self.args[0] == sys.executable:
            self.args = self.args[1:]
        self.returncode: int | None = None
        fds = []
        fd, self.stdin = _descriptor(stdin, 0, "r", text)
        fds.append(fd)
        fd, self.stdout = _descriptor(stdout, 1, "w", text)
        fds.append(fd)
        fd, self.stderr = _descriptor(stderr if stderr != subprocess.STDOUT else fds[1], 2, "w", text)
        fds.append(fd)
        request = {
            "argv": self.args,
            "env": dict(os.environ if env is None else env),
            "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
            "session": start_new_session,
            "caller": os.getpid(),
            "coverage": _coverage_settings(),
            "fork_workers": fork_workers,
        }
        data = json.dumps(request).encode()
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._conn.connect(path or server_path())
            socket.send_fds(self._conn, [HEADER.pack(len(data)) + data], fds)
        finally:
            for fd in fds:
                os.close(fd)
        self._reply = self._conn.makefile("rb")
        self.pid = int(self._reply.readline())

    def poll(self) -> int | None:
        """The exit status if the process has ended, else ``None``."""
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._finish()
        return self.returncode

    def _finish(self) -> None:
        line = self._reply.readline()
        self.returncode = int(line) if line else -signal.SIGKILL
        self._reply.close()
        self._conn.close()

    def wait(self, timeout: float | None = None) -> int:
        """Waits for the process to end; returns its status.

        Raises:
            subprocess.TimeoutExpired: it is still running after ``timeout`` seconds.
        """
        if self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._finish()
        return self.returncode

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[Any, Any]:
        """Reads the ``stdout`` and ``stderr`` pipes to their ends and waits, as
        :meth:`subprocess.Popen.communicate` does (without ``input``).

        Raises:
            subprocess.TimeoutExpired: the output did not end within ``timeout`` seconds.
        """
        if input is not None:
            raise NotImplementedError("communicate() writes no input here")
        deadline = None if timeout is None else time.monotonic() + timeout
        streams = [s for s in (self.stdout, self.stderr) if s is not None and not s.closed]
        chunks: dict[Any, list[bytes]] = {s: [] for s in streams}
        while streams:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = select.select(streams, [], [], left)[0]
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout)
            for stream in ready:
                chunk = os.read(stream.fileno(), 1 << 16)
                if chunk:
                    chunks[stream].append(chunk)
                else:
                    streams.remove(stream)
                    stream.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

        def text(stream: Any) -> Any:
            if stream is None:
                return None
            data = b"".join(chunks.get(stream, []))
            return data.decode() if isinstance(stream, io.TextIOBase) else data

        return text(self.stdout), text(self.stderr)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> ForkedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (self.stdin, self.stdout):
            if stream is not None:
                stream.close()
        self.wait()


def coverage_prefix() -> list[str]:
    """The interpreter options that run a fresh process under this process's coverage
    settings (none when coverage is off)."""
    settings = _coverage_settings()
    if settings is None:
        return []
    rcfile, data_file = settings["rcfile"], settings["data_file"]
    return ["-m", "coverage", "run", "--parallel-mode", f"--rcfile={rcfile}", f"--data-file={data_file}"]


def _fresh(args: Sequence[str]) -> list[str]:
    args = list(args)
    if args and args[0] == sys.executable:
        return [args[0], *coverage_prefix(), *args[1:]]
    return args


def popen(args: Sequence[str], **options: Any) -> ForkedProcess | subprocess.Popen:
    """Starts ``args`` (``[sys.executable, ...]``) as a fork of the server; ``options`` as
    :class:`subprocess.Popen` takes them (streams, ``env``, ``cwd``, ``start_new_session``)."""
    if not ENABLED:
        return subprocess.Popen(_fresh(args), **options)
    return ForkedProcess(args, **options)


def run(
    args: Sequence[str], *, input: str | None = None, timeout: float | None = None, **options: Any
) -> subprocess.CompletedProcess:
    """As ``subprocess.run(args, capture_output=True, text=True, ...)``, forked from the server.

    Raises:
        subprocess.TimeoutExpired: the process ran past ``timeout`` seconds (it is killed).
    """
    if not ENABLED:
        return subprocess.run(
            _fresh(args), input=input, timeout=timeout, capture_output=True, text=True, **options
        )
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as given:
        given.write((input or "").encode())
        given.seek(0)
        process = ForkedProcess(args, stdin=given, stdout=out, stderr=err, **options)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired as expired:
            process.kill()
            process.wait()
            out.seek(0)
            err.seek(0)
            expired.stdout, expired.stderr = (
                out.read().decode(errors="replace"),
                err.read().decode(errors="replace"),
            )
            raise
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return subprocess.CompletedProcess(process.args, process.returncode, *text)


def stop() -> None:
    """Ends this process's server, if it runs (the processes it forked keep running)."""
    global _server
    with _lock:
        if _server is not None:
            process, path = _server
            process.kill()
            process.wait()
            process.stdout.close()
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            _server = None


def install() -> None:
    """Makes the package's worker processes (``allreduce.cluster.spawn``) forks of the server."""
    from allreduce.cluster import spawn

    if ENABLED:
        spawn.START = popen
    else:
        spawn.PYTHON = [sys.executable, *coverage_prefix()]
