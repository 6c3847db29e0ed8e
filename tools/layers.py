"""Which modules form the pure planning layer, read from the modules themselves.

A module of ``src/allreduce`` belongs to the pure layer when it says so on a line of its
own: ``__layer__ = "pure"``. Such a module imports without TensorFlow (a test checks it
in a process that blocks TensorFlow) and has its own coverage floor. Nothing else lists
them: a new pure module declares itself, and the Makefile, tox and the mutation tool ask
this script.

    python tools/layers.py                      # the pure modules' paths, comma-separated
    python tools/layers.py --modules            # their module names, one per line
    python tools/layers.py --coverage 95        # coverage report of them, failing below 95 %
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "allreduce"
_MARKER = re.compile(r'^__layer__ = "pure"$', re.MULTILINE)


def pure_paths() -> list[str]:
    """Paths, relative to the repository, of the modules that declare the pure layer."""
    found = [p for p in sorted(PACKAGE.rglob("*.py")) if _MARKER.search(p.read_text(encoding="utf-8"))]
    return [str(p.relative_to(ROOT)) for p in found]


def module_name(path: str) -> str:
    """``allreduce.spec`` for ``src/allreduce/spec.py``."""
    return ".".join(Path(path).relative_to("src").with_suffix("").parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="module names, one per line")
    parser.add_argument("--coverage", type=float, metavar="FLOOR", help="run coverage report with this floor")
    args = parser.parse_args(argv)
    paths = pure_paths()
    if not paths:
        parser.error(f'no module under {PACKAGE} declares __layer__ = "pure"')
    if args.coverage is not None:
        command = [
            sys.executable,
            "-m",
            "coverage",
            "report",
            "--no-skip-covered",
            f"--include={','.join(paths)}",
        ]
        return subprocess.call([*command, f"--fail-under={args.coverage:g}"], cwd=ROOT)
    print("\n".join(module_name(p) for p in paths) if args.modules else ",".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
