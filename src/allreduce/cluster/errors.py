"""The errors of :mod:`allreduce.cluster` (pure Python)."""

from __future__ import annotations

__all__ = ["WorkerError", "WorkerStartError"]


class WorkerError(RuntimeError):
    """A worker of a cluster exited, stopped answering, or a call outlived its deadline.

    Attributes:
        task: the worker's task index, or ``None`` when no single worker is to blame
            (the call timed out while every worker still answered).
        reason: ``"exited"``, ``"stopped"``, ``"unresponsive"``, ``"unreachable"``,
            ``"timeout"``, ``"start failed"``, or ``"raised"`` (the function
            :func:`allreduce.spmd.launch` ran on it raised).
        stderr: the end of the worker's error output (empty for workers this process
            did not start).
    """

    __module__ = "allreduce.cluster"

    def __init__(self, message: str, *, task: int | None, reason: str, stderr: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.reason = reason
        self.stderr = stderr

    def __reduce__(self) -> tuple:
        # Picklable, so that an error raised in a worker process reaches its launcher.
        return _rebuild, (type(self), str(self), self.task, self.reason, self.stderr)


class WorkerStartError(WorkerError):
    """A worker process could not start; the message ends with its error output."""

    __module__ = "allreduce.cluster"


def _rebuild(cls: type[WorkerError], message: str, task: int | None, reason: str, stderr: str) -> WorkerError:
    return cls(message, task=task, reason=reason, stderr=stderr)
