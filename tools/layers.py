"""Which modules form the layers that need no TensorFlow, read from the modules themselves.

A module of ``src/allreduce`` belongs to a layer when it says so on a line of its own:

- ``__layer__ = "pure"``: the planning layer (spec, devices, ranges, schedules, the
  registry and each algorithm's declaration, the batch plan), pure Python over names and
  sizes;
- ``__layer__ = "model"``: the numerical models over that plan (the cost model and the
  tuning, the compression error bound), pure Python too.

Such a module imports without TensorFlow (a test checks it in a process that blocks
TensorFlow) and falls under the pure coverage floor. Nothing else lists them: a new
module declares itself, and the Makefile, tox and the mutation tool ask this script.

    python tools/layers.py                         # the paths of both layers, comma-separated
    python tools/layers.py --layer pure --modules  # the planning layer's module names
    python tools/layers.py --coverage 95           # coverage report of both, failing below 95 %
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "allreduce"
LAYERS = ("pure", "model")
_MARKER = re.compile(r'^__layer__ = "(\w+)"$', re.MULTILINE)


def layer_paths(*layers: str) -> list[str]:
    """Paths, relative to the repository, of the modules that declare one of ``layers``."""
    wanted = set(layers or LAYERS)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        match = _MARKER.search(path.read_text(encoding="utf-8"))
        if match and match.group(1) in wanted:
            found.append(str(path.relative_to(ROOT)))
    return found


def pure_paths() -> list[str]:
    """The planning layer's paths (``__layer__ = "pure"``)."""
    return layer_paths("pure")


def module_name(path: str) -> str:
    """``allreduce.planning.spec`` for ``src/allreduce/planning/spec.py``."""
    return ".".join(Path(path).relative_to("src").with_suffix("").parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", choices=LAYERS, action="append", help="one layer (default: both)")
    parser.add_argument("--modules", action="store_true", help="module names, one per line")
    parser.add_argument("--coverage", type=float, metavar="FLOOR", help="run coverage report with this floor")
    args = parser.parse_args(argv)
    paths = layer_paths(*(args.layer or LAYERS))
    if not paths:
        parser.error(f"no module under {PACKAGE} declares one of these layers")
    if args.coverage is not None:
        command = [sys.executable, "-m", "coverage", "report", "--no-skip-covered"]
        command += [f"--include={','.join(paths)}", f"--fail-under={args.coverage:g}"]
        return subprocess.call(command, cwd=ROOT)
    print("\n".join(module_name(p) for p in paths) if args.modules else ",".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
