"""Device names: parsing, worker prefixes and grouping (pure Python)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from allreduce.core.validation import check_int, check_sequence

__layer__ = "pure"

__all__ = [
    "check_device_names",
    "DeviceName",
    "build_all_reduce_device_prefixes",
    "gather_candidates",
    "group_device_names",
    "group_by_worker",
    "other_cpu_of_worker",
    "parse_device_name",
    "shares_memory",
]

_FIELD = re.compile(
    r"^(?:job:(?P<job>[A-Za-z0-9_\-]+)"
    r"|replica:(?P<replica>\d+)"
    r"|task:(?P<task>\d+)"
    r"|device:(?P<dtype>[A-Za-z_]+):(?P<index>\d+|\*)"
    r"|(?P<short>[A-Za-z_]+):(?P<sindex>\d+|\*))$"
)


@dataclass(frozen=True)
class DeviceName:
    """The parts of a TensorFlow device name; a missing part is ``None``."""

    job: str | None = None
    replica: int | None = None
    task: int | None = None
    device_type: str | None = None
    index: int | None = None

    @property
    def worker(self) -> tuple[str, int, int]:
        """The (job, replica, task) triple of the worker process.

        Missing parts default to the in-process worker, ``localhost``, replica 0, task 0.
        """
        return (self.job or "localhost", self.replica or 0, self.task or 0)

    @property
    def worker_prefix(self) -> str:
        """``/job:J/replica:R/task:T`` with the parts that are known."""
        parts = []
        if self.job is not None:
            parts.append(f"/job:{self.job}")
        if self.replica is not None:
            parts.append(f"/replica:{self.replica}")
        if self.task is not None:
            parts.append(f"/task:{self.task}")
        return "".join(parts)

    def with_device(self, device_type: str, index: int) -> str:
        """The full name of another device of the same worker."""
        return f"{self.worker_prefix}/device:{device_type}:{index}"

    def __str__(self) -> str:
        if self.device_type is None:
            return self.worker_prefix
        index = "*" if self.index is None else self.index
        return f"{self.worker_prefix}/device:{self.device_type}:{index}"


def parse_device_name(name: str) -> DeviceName:
    """Parses a device name such as ``/job:worker/task:1/device:GPU:0`` or ``/cpu:0``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is not a device name.
    """
    if not isinstance(name, str):
        raise TypeError(f"device name must be a str, got {type(name).__name__}: {name!r}")
    return _parse(name)


@functools.lru_cache(maxsize=4096)
def _parse(name: str) -> DeviceName:
    # Names repeat for every tensor of a batch; DeviceName is immutable, so share it.
    fields: dict[str, object] = {}
    for part in name.strip("/").split("/") if name.strip("/") else []:
        match = _FIELD.match(part)
        if match is None:
            raise ValueError(f"invalid device name {name!r}: cannot parse {part!r}")
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        if "job" in groups:
            fields["job"] = groups["job"]
        elif "replica" in groups:
            fields["replica"] = int(groups["replica"])
        elif "task" in groups:
            fields["task"] = int(groups["task"])
        else:
            kind = groups.get("dtype", groups.get("short", ""))
            index = groups.get("index", groups.get("sindex", "*"))
            fields["device_type"] = kind.upper()
            fields["index"] = None if index == "*" else int(index)
    return DeviceName(**fields)  # type: ignore[arg-type]


def build_all_reduce_device_prefixes(job_name: str, num_tasks: int) -> list[str]:
    """Returns the worker prefixes ``/job:NAME/task:I`` for ``num_tasks`` tasks.

    ``localhost`` names the single in-process worker and gives ``['/job:localhost']``.

    Raises:
        ValueError: ``num_tasks`` is below 1, or above 1 for ``localhost``.
    """
    check_int("num_tasks", num_tasks, minimum=1)
    if job_name == "localhost":
        if num_tasks != 1:
            raise ValueError(f"job 'localhost' has exactly one task, got num_tasks={num_tasks}")
        return ["/job:localhost"]
    return [f"/job:{job_name}/task:{task}" for task in range(num_tasks)]


def group_device_names(devices: Sequence[str], group_size: int) -> list[list[str]]:
    """Splits ``devices`` into ``ceil(len / group_size)`` groups of ``group_size``.

    Device ``i`` goes to group ``i % num_groups``; when the count does not divide,
    the list wraps around so that every group is full and every device appears at
    least once.

    Raises:
        ValueError: ``group_size`` is below 1 or above ``len(devices)``.
    """
    check_int("group_size", group_size, minimum=1)
    num_devices = len(devices)
    if group_size > num_devices:
        raise ValueError(f"group_size={group_size} exceeds the {num_devices} devices {list(devices)}")
    num_groups = -(-num_devices // group_size)
    groups: list[list[str]] = [[] for _ in range(num_groups)]
    for i in range(num_groups * group_size):
        groups[i % num_groups].append(devices[i % num_devices])
    return groups


def group_by_worker(devices: Sequence[str]) -> list[list[int]]:
    """Indices of ``devices`` grouped by worker (job, replica, task), in first-seen order."""
    order: dict[tuple[str, int, int], list[int]] = {}
    for i, name in enumerate(devices):
        order.setdefault(parse_device_name(name).worker, []).append(i)
    return list(order.values())


def gather_candidates(devices: Sequence[str], device_type: str) -> list[str]:
    """The devices of ``device_type`` a shuffle may sum on, in order, without repeats.

    These are the inputs' own devices of that type; for ``CPU``, each worker whose
    inputs are on other devices adds its ``CPU:0``.
    """
    found: dict[str, None] = {}
    for name in devices:
        if parse_device_name(name).device_type == device_type:
            found.setdefault(name, None)
    if device_type == "CPU":
        covered = {parse_device_name(name).worker for name in found}
        for name in devices:
            parsed = parse_device_name(name)
            if parsed.worker not in covered:
                found.setdefault(parsed.with_device("CPU", 0), None)
                covered.add(parsed.worker)
    return list(found)


def other_cpu_of_worker(target: str, devices: Sequence[str]) -> str | None:
    """The first of ``devices`` that is another CPU of ``target``'s worker, or ``None``
    (also when ``target`` is not a CPU)."""
    wanted = parse_device_name(target)
    if wanted.device_type != "CPU":
        return None
    for name in devices:
        parsed = parse_device_name(name)
        if parsed.device_type == "CPU" and parsed.worker == wanted.worker and parsed != wanted:
            return name
    return None


def shares_memory(devices: Sequence[str]) -> bool:
    """Whether all ``devices`` are CPUs of one worker (a copy between them is free)."""
    parsed = [parse_device_name(d) for d in devices]
    return all(p.device_type == "CPU" for p in parsed) and len({p.worker for p in parsed}) == 1


def check_device_names(devices: Any, count: int, what: str) -> list[str]:
    """``devices`` if it names one valid device per ``what``, ``count`` in all.

    Raises:
        TypeError: ``devices`` is not a list of strings.
        ValueError: a different count, or a name that is not a device name.
    """
    check_sequence("devices", devices, "device names")
    if len(devices) != count:
        raise ValueError(f"devices must list one device per {what}: {count}, got {len(devices)}: {devices!r}")
    for name in devices:
        parse_device_name(name)
    return list(devices)
