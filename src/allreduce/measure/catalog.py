"""``allreduce-bench --list-specs``: every algorithm of the registry, described (pure Python)."""

from __future__ import annotations

from allreduce.planning.registry import NAMED_HIERARCHICAL, algorithm_names, get_algorithm

__all__ = ["format_spec_list"]


def _describe(name: str) -> list[str]:
    info = get_algorithm(name)
    lines = [f"  {name:<14} {info.summary}"]
    details = [f"runs on {'/'.join(sorted(info.device_types))}"]
    details.append(f"#k: {info.shards}" if info.takes_shards else "takes no #k")
    if not info.reduces:
        details.append("a baseline, never a default")
    elif not info.composable and not info.is_hierarchical:
        details.append("not a level of A/B")
    lines.append(f"  {'':<14} {'; '.join(details)}")
    return lines


def format_spec_list() -> str:
    """The text of ``--list-specs``: each algorithm with its summary, its device types and
    what its ``#k`` means, then how ``A/B`` and size ranges combine them."""
    composable = [n for n in algorithm_names() if get_algorithm(n).composable]
    lines = ["Algorithms (a spec names one, optionally with #k):"]
    for name in algorithm_names():
        lines += _describe(name)
    lines += [
        "",
        "Hierarchical A/B: A sums within each worker and leaves one sum per worker, B",
        "all-reduces those sums across workers, and each worker copies the result to its",
        "devices; #k belongs to B. A and B may be any two of: " + ", ".join(composable) + ".",
        "On one worker (no --workers) only A runs. Documented pairs:",
    ]
    for name in NAMED_HIERARCHICAL:
        lines += _describe(name)
    lines += [
        "",
        "Size ranges: 'pscpu:64k:xring' uses pscpu for tensors of up to 64Ki elements and",
        "xring for larger ones.",
        "Defaults of --specs: each algorithm above that all-reduces, #2 of each flat one that",
        "takes #k, and the documented pairs, where they can run on the devices.",
    ]
    return "\n".join(lines)
