"""The tuning cache: one JSON file per topology and workload (pure Python).

A tuning is keyed by a topology fingerprint (:func:`topology`: device names and types,
how they group into workers, the dtype, the TensorFlow and library versions) and a
workload bucket (:func:`allreduce.selection.bands.workload_bucket`). Its file,
``<topology digest>-<workload digest>.json`` under the cache folder, holds the key, the
chosen spec, the fitted model, the decision per band and every sample. Files are written
whole to a temporary file and renamed into place (``os.replace``), under a lock, so that
a reader never sees half a file. A file that cannot be read, or whose content is not a
tuning of that key, is logged and ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from allreduce.planning.devices import group_by_worker, parse_device_name
from allreduce.selection.bands import workload_bucket

__layer__ = "model"

__all__ = [
    "FORMAT",
    "cache_dir",
    "entry_path",
    "key_of",
    "load",
    "measured",
    "same_topology",
    "store",
    "topology",
]

logger = logging.getLogger(__name__)

#: The ``format`` field of every cache file this version writes and reads.
FORMAT = "allreduce-tune/1"
#: Overrides the cache folder (tests and shared machines set it).
ENV_DIR = "ALLREDUCE_CACHE_DIR"

_write_lock = threading.Lock()


def cache_dir(given: str | os.PathLike[str] | None = None) -> Path:
    """``given``, else ``$ALLREDUCE_CACHE_DIR``, else ``$XDG_CACHE_HOME/allreduce``,
    else ``~/.cache/allreduce``."""
    if given is not None:
        return Path(given)
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "allreduce"


def _versions() -> dict[str, str]:
    from allreduce import __version__

    tf = sys.modules.get("tensorflow")
    version = getattr(tf, "__version__", None)
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"):
            try:
                version = dist_version(dist)
                break
            except PackageNotFoundError:
                continue
    return {"allreduce": __version__, "tensorflow": version or "unknown"}


def topology(devices: Sequence[str], dtype: str, mode: str | None = None) -> dict[str, Any]:
    """The topology fingerprint of ``devices`` and ``dtype``; ``mode`` (e.g. ``"spmd"``)
    keeps the tunings of another way of running apart from the one-client mode's."""
    parsed = [parse_device_name(d) for d in devices]
    found = {
        "devices": list(devices),
        "device_types": sorted({p.device_type or "CPU" for p in parsed}),
        "workers": [len(g) for g in group_by_worker(devices)],
        "dtype": dtype,
        **_versions(),
    }
    return found if mode is None else {**found, "mode": mode}


def key_of(
    devices: Sequence[str], dtype: str, sizes: Sequence[int], mode: str | None = None
) -> dict[str, Any]:
    """The full cache key: the topology (of ``mode``) and the workload bucket (bands as
    strings, as JSON has them)."""
    bucket = {str(b): c for b, c in workload_bucket(sizes).items()}
    return {**topology(devices, dtype, mode), "workload": bucket}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def entry_path(folder: Path, key: Mapping[str, Any]) -> Path:
    """Where the tuning of ``key`` lives in ``folder``."""
    top = {k: v for k, v in key.items() if k != "workload"}
    return folder / f"{_digest(top)}-{_digest(key['workload'])}.json"


def same_topology(folder: Path, key: Mapping[str, Any]) -> list[Path]:
    """The cache files of every workload tuned on ``key``'s topology."""
    top = {k: v for k, v in key.items() if k != "workload"}
    return sorted(folder.glob(f"{_digest(top)}-*.json"))


def load(path: Path, key: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The tuning stored at ``path``; ``None`` (and a warning) when the file is unreadable,
    not a tuning of this format, or of another key than ``key`` (topology only, when
    ``key`` has no workload)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("ignoring tuning cache file %s: cannot read it (%s)", path, err)
        return None
    problem = _problem(data, key)
    if problem is not None:
        logger.warning("ignoring tuning cache file %s: %s", path, problem)
        return None
    return data


def _problem(data: Any, key: Mapping[str, Any] | None) -> str | None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"not a tuning of format {FORMAT!r}"
    if not isinstance(data.get("spec"), str) or not isinstance(data.get("key"), dict):
        return "it has no spec or no key"
    if key is not None:
        stored = data["key"]
        wanted = dict(key) if "workload" in key else {**key, "workload": stored.get("workload")}
        if stored != wanted:
            return "it was tuned for another topology or workload"
    return None


def measured(entry: Mapping[str, Any]) -> bool:
    """Whether a tuning's choice was measured against every candidate: each one that did
    not fail has a sample (a tuning that measured less is not trusted, and tuned again)."""
    samples = entry.get("samples")
    if not isinstance(samples, list) or not samples:
        return False
    seen = {s.get("spec") for s in samples if isinstance(s, dict)}
    failed = entry.get("failed") or {}
    return all(c in seen or c in failed for c in entry.get("candidates") or [])


def store(path: Path, entry: Mapping[str, Any]) -> None:
    """Writes ``entry`` to ``path`` atomically (a temporary file renamed into place).

    Raises:
        OSError: the folder cannot be made or written.
    """
    text = json.dumps({"format": FORMAT, **entry}, indent=1, sort_keys=True) + "\n"
    with _write_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
