"""The fork server of the test suite (see :mod:`tests.forkserver`): imports TensorFlow and
the package once, then forks one process per request.

    python -m tests.forkserver_main SOCKET   # started by tests.forkserver.server_path
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
from typing import Any

from tests.forkserver import HEADER, ForkedProcess

#: Imported by the server before it forks anything.
PRELOAD = (
    "tensorflow",
    "numpy",
    "allreduce",
    "allreduce.bench.cli",
    "allreduce.cluster.worker",
    "allreduce.spmd._child",
    "allreduce.spmd.runtime",
)
_POLL_S = 0.05


def _child_streams(unbuffered: bool) -> list[Any]:
    """New ``sys.stdin``/``stdout``/``stderr`` on descriptors 0-2, buffered as Python
    buffers them at start-up; returns the server's, which handlers made at import time
    (TensorFlow's logger) still write to."""
    old = [sys.stdout, sys.stderr]
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        tty = os.isatty(fd)
        buffering = 0 if unbuffered and mode == "w" else -1
        raw = io.open(fd, mode + "b", buffering=buffering, closefd=False)  # noqa: SIM115, UP020
        stream = io.TextIOWrapper(
            raw,
            encoding="utf-8",
            errors="backslashreplace" if name == "stderr" else "strict",
            line_buffering=tty or name == "stderr",
            write_through=unbuffered,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    return old


def _watch(pid: int) -> None:
    """Kills this process when process ``pid`` ends."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        os._exit(1)

    def wait() -> None:
        select.select([fd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, name="forkserver-watch", daemon=True).start()


def _run_target(argv: list[str]) -> None:
    """Runs ``argv`` as ``python ARGV`` would, in this process."""
    import runpy

    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path.insert(0, os.getcwd())
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-":
        sys.argv = ["-", *argv[1:]]
        sys.path.insert(0, "")
        main = type(sys)("__main__")
        sys.modules["__main__"] = main
        exec(compile(sys.stdin.read(), "<stdin>", "exec"), main.__dict__)
    elif argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        sys.path.insert(0, "")
        main = type(sys)("__main__")
        sys.modules["__main__"] = main
        exec(compile(argv[1], "<string>", "exec"), main.__dict__)
    else:
        sys.argv = list(argv)
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


def _exit_code(err: BaseException | None) -> int:
    if err is None:
        return 0
    if isinstance(err, SystemExit):
        code = err.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    import traceback

    traceback.print_exception(err)
    if isinstance(err, KeyboardInterrupt):
        return -signal.SIGINT
    return 1


def _start_coverage(settings: dict | None) -> Any:
    if not settings:
        return None
    import coverage

    cov = coverage.Coverage(data_file=settings["data_file"], data_suffix=True, config_file=settings["rcfile"])
    cov.start()
    return cov


def _child(request: dict, fds: list[int], path: str) -> None:
    """In the forked process: becomes the requested process, runs it, and leaves."""
    if request["session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    atexit._clear()
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(request["cwd"])
    for entry in reversed([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]):
        sys.path.insert(0, entry)
    old_streams = _child_streams(bool(env.get("PYTHONUNBUFFERED")))
    if request["fork_workers"]:
        from allreduce.cluster import spawn

        spawn.START = lambda args, **options: ForkedProcess(args, path=path, **options)
    argv = list(request["argv"])
    if argv and argv[-1] == str(request["caller"]):
        argv[-1] = str(os.getppid())
    _watch(request["caller"])
    cov = _start_coverage(request.get("coverage"))
    error: BaseException | None = None
    try:
        _run_target(argv)
    except BaseException as err:  # as the interpreter would report it
        error = err
    code = _exit_code(error)
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    if cov is not None:
        cov.stop()
        cov.save()
    for stream in (sys.stdout, sys.stderr, *old_streams):
        with contextlib.suppress(Exception):
            stream.flush()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    (size,) = HEADER.unpack(data[: HEADER.size])
    data = data[HEADER.size :]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("request cut short")
        data += chunk
    return json.loads(data), fds


def serve(path: str) -> None:
    """Imports :data:`PRELOAD`, then forks one process per request on ``path`` until its
    parent ends."""
    from allreduce.cluster.worker import die_with_parent

    parent = os.getppid()
    die_with_parent(parent)
    for name in PRELOAD:
        __import__(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    waiting: dict[int, socket.socket] = {}
    while os.getppid() == parent:
        readable, _, _ = select.select([listener], [], [], _POLL_S)
        if readable:
            conn, _ = listener.accept()
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError, struct.error) as err:
                sys.stderr.write(f"forkserver: a request failed: {err!r}\n")
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                for held in (listener, conn, *waiting.values()):
                    held.close()
                try:
                    _child(request, fds, path)
                finally:
                    os._exit(70)
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            waiting[pid] = conn
        _reap(waiting)


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
