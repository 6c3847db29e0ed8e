"""A picture of a run: bus bandwidth against size, one line per spec and peer.

Any format matplotlib writes (``.png``, ``.svg``, ``.pdf``, ...), chosen by the file's
extension; a PNG is then shrunk to a 64-colour palette.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from allreduce.measure.cases import format_bytes
from allreduce.measure.contenders import FLOOR, OURS
from allreduce.measure.driver import Result

__all__ = ["plot_busbw"]

_STYLE = {OURS: "-", FLOOR: ":"}


def plot_busbw(results: Sequence[Result], path: str, *, title: str = "") -> None:
    """Writes a picture of busbw (GB/s) against bytes per device (log scale) to ``path``.

    With a single case (a model or many-small workload) it draws one bar per contender.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'allreduce[bench]'``).
        ValueError: matplotlib cannot write the format of ``path``'s extension.
    """
    from matplotlib.figure import Figure

    timed = [r for r in results if r.timed]
    sizes = sorted({r.case.nbytes for r in timed})
    fig = Figure(figsize=(9, 5.5), dpi=80)
    ax = fig.add_subplot()
    if len(sizes) > 1:
        _lines(ax, timed, sizes)
    else:
        _bars(ax, timed)
    ax.set_ylabel("busbw (GB/s)")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    fig.savefig(path, format=fmt)
    if fmt == "png":
        _shrink(path)


def _lines(ax: Any, timed: Sequence[Result], sizes: Sequence[int]) -> None:
    from matplotlib import colormaps

    palettes = {OURS: colormaps["tab10"].colors, FLOOR: ("black",)}
    used: dict[str, int] = {}
    for name in dict.fromkeys(r.name for r in timed):
        rows = sorted((r for r in timed if r.name == name), key=lambda r: r.case.nbytes)
        kind = rows[0].kind
        palette = palettes.get(kind, colormaps["Dark2"].colors)
        used[kind] = used.get(kind, -1) + 1
        ax.plot(
            [r.case.nbytes for r in rows],
            [r.busbw for r in rows],
            _STYLE.get(kind, "--"),
            marker="o" if kind == OURS else ".",
            markersize=4,
            linewidth=1.6 if kind == OURS else 1.0,
            color=palette[used[kind] % len(palette)],
            label=name,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([format_bytes(s) for s in sizes], rotation=45, fontsize=8)
    ax.set_xlabel("bytes per device")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2, loc="upper left")


def _bars(ax: Any, timed: Sequence[Result]) -> None:
    rows = sorted(timed, key=lambda r: r.busbw, reverse=True)
    colors = ["tab:blue" if r.kind == OURS else "tab:gray" for r in rows]
    ax.bar(range(len(rows)), [r.busbw for r in rows], color=colors)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.name for r in rows], rotation=60, ha="right", fontsize=8)
    if rows:
        ax.set_xlabel(f"{rows[0].case.name} ({format_bytes(rows[0].case.nbytes)} per device)")


def _shrink(path: str) -> None:
    """Rewrites the PNG with a 64-colour palette: a quarter of the size, same look."""
    from PIL import Image  # a dependency of matplotlib

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)
