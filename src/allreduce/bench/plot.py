"""A picture of a run: bus bandwidth against size, one line per spec and peer."""

from __future__ import annotations

from collections.abc import Sequence

from allreduce.bench.cases import format_bytes
from allreduce.bench.contenders import FLOOR, OURS
from allreduce.bench.driver import Result

__all__ = ["plot_busbw"]

_STYLE = {OURS: "-", FLOOR: ":"}


def plot_busbw(results: Sequence[Result], path: str, *, title: str = "") -> None:
    """Writes a PNG of busbw (GB/s) against bytes per device (log scale) to ``path``.

    With a single case (a model or many-small workload) it draws one bar per contender.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'allreduce[bench]'``).
    """
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - matplotlib is in the bench and test extras
        raise ImportError("--plot needs matplotlib: pip install 'allreduce[bench]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in results if r.timed]
    names = list(dict.fromkeys(r.name for r in timed))
    sizes = sorted({r.case.nbytes for r in timed})
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=80)
    palettes = {OURS: plt.get_cmap("tab10").colors, FLOOR: ("black",)}
    used: dict[str, int] = {}
    if len(sizes) > 1:
        for name in names:
            rows = sorted((r for r in timed if r.name == name), key=lambda r: r.case.nbytes)
            kind = rows[0].kind
            palette = palettes.get(kind, plt.get_cmap("Dark2").colors)
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
    else:
        rows = sorted(timed, key=lambda r: r.busbw, reverse=True)
        colors = ["tab:blue" if r.kind == OURS else "tab:gray" for r in rows]
        ax.bar(range(len(rows)), [r.busbw for r in rows], color=colors)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r.name for r in rows], rotation=60, ha="right", fontsize=8)
        if rows:
            ax.set_xlabel(f"{rows[0].case.name} ({format_bytes(rows[0].case.nbytes)} per device)")
    ax.set_ylabel("busbw (GB/s)")
    if len(sizes) > 1:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if len(sizes) > 1:
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    _shrink(path)


def _shrink(path: str) -> None:
    """Rewrites the PNG with a 64-colour palette: a quarter of the size, same look."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)
