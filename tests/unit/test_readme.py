"""The README is a short front door whose every snippet runs and prints what it shows.

The helpers here also serve ``test_docs.py``: a ```` ```python ```` block runs in a fresh
interpreter fed on stdin (as if pasted into an interactive shell, where AutoGraph cannot
read a function's source and warns), and a ```` ```text ```` block right after it is its
exact output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from allreduce.planning.registry import algorithm_names, get_algorithm
from tests import forkserver

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ALGORITHMS = ROOT / "docs" / "algorithms.md"
MAX_README_LINES = 200
SNIPPET_TIMEOUT_S = 240

_FENCE = re.compile(r"^([ \t]*)```([\w-]*)\n(.*?)^\1```[ \t]*$", re.S | re.M)
_EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->")


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    path: Path
    index: int  # among the file's blocks of the same language
    lang: str
    code: str
    output: str | None  # the ```text block after a python block (with at most a line ending in ":" between)
    excerpt_of: str | None  # the file an <!-- excerpt: ... --> marker names

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.lang}{self.index}"


@cache
def blocks(path: Path) -> tuple[Block, ...]:
    """Every fenced block of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    found = list(_FENCE.finditer(text))
    out, counts = [], {}
    for i, match in enumerate(found):
        lang, code = match.group(2), textwrap.dedent(match.group(3))
        output = None
        if lang == "python" and i + 1 < len(found):
            after = found[i + 1]
            between = text[match.end() : after.start()].strip()
            if after.group(2) == "text" and (not between or ("\n" not in between and between.endswith(":"))):
                output = textwrap.dedent(after.group(3))
        before = text[: match.start()].rstrip().splitlines()
        marker = _EXCERPT.fullmatch(before[-1].strip()) if before else None
        excerpt = marker.group(1) if marker else None
        counts[lang] = counts.get(lang, 0) + 1
        out.append(Block(path, counts[lang], lang, code, output, excerpt))
    return tuple(out)


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang == "python"]


def run_snippet(code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a process of its own (a fork of tests/forkserver.py's server), fed
    on stdin, from the repository root, with a cache directory of its own (a snippet that
    tunes never writes the user's cache)."""
    with tempfile.TemporaryDirectory(prefix="allreduce-snippet-") as cache:
        return forkserver.run(
            [sys.executable, "-"],
            input=code,
            timeout=SNIPPET_TIMEOUT_S,
            cwd=ROOT,
            env={**os.environ, "XDG_CACHE_HOME": cache, "ALLREDUCE_CACHE_DIR": cache},
        )


def check_runs_as_shown(block: Block) -> subprocess.CompletedProcess:
    """Fails unless ``block`` exits 0, prints its text block (when it has one) and no
    AutoGraph warning."""
    result = run_snippet(block.code)
    assert result.returncode == 0, f"{block.name} failed:\n{result.stderr[-3000:]}"
    autograph = [line for line in result.stderr.splitlines() if "AutoGraph" in line]
    assert not autograph, f"{block.name} printed an AutoGraph warning: {autograph}"
    if block.output is not None:
        assert result.stdout.strip() == block.output.strip(), (
            f"{block.name} printed\n{result.stdout}\nbut the document shows\n{block.output}"
        )
    return result


# --- shell blocks: the commands they name must exist ---------------------------------

_COMMENT = re.compile(r"\s+#\s.*$")


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([\w.-]+):", text, flags=re.M))


@cache
def tox_envs() -> frozenset[str]:
    text = (ROOT / "tox.ini").read_text()
    return frozenset(re.findall(r"^\[testenv:([\w-]+)\]", text, flags=re.M))


@cache
def extras() -> frozenset[str]:
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]
    return frozenset(re.findall(r"^([\w-]+)\s*=", section.split("\n[")[0], flags=re.M))


@cache
def bench_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "allreduce.bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    return done.stdout


@cache
def worker_help() -> str:
    from allreduce.cluster.worker_cli import build_parser

    return build_parser().format_help()


def _options(words: list[str]) -> list[str]:
    return [w.split("=")[0] for w in words if w.startswith("-") and w != "-"]


def command_problems(line: str) -> list[str]:
    """What is wrong with one shell command of a document (nothing for commands it does
    not know)."""
    line = _COMMENT.sub("", line.strip().removeprefix("$ ")).strip()
    if not line or line.startswith("#"):
        return []
    words = shlex.split(line)
    while len(words) > 1 and re.fullmatch(r"[A-Z_]+=.*", words[0], flags=re.S):
        words = words[1:]  # VARIABLE=value before the command
    tool, args = words[0], words[1:]
    if tool == "make":
        return [f"no make target {t!r}" for t in args if t not in make_targets()]
    if tool == "tox":
        envs = args[args.index("-e") + 1].split(",") if "-e" in args else []
        return [f"no tox environment {e!r}" for e in envs if e not in tox_envs()]
    if tool in ("pip", ".venv/bin/pip") or tool.endswith("/pip"):
        problems = []
        for word in args:
            for names in re.findall(r"\[([\w,-]+)\]", word):
                problems += [f"no extra {e!r}" for e in names.split(",") if e not in extras()]
        return problems
    if tool == "allreduce-bench" or words[:3] == ["python", "-m", "allreduce.bench"]:
        known = set(re.findall(r"(?<![\w-])(--?[\w-]+)", bench_help()))
        return [f"allreduce-bench has no option {o!r}" for o in _options(args) if o not in known]
    if tool == "allreduce-worker":
        known = set(re.findall(r"(?<![\w-])(--?[\w-]+)", worker_help()))
        return [f"allreduce-worker has no option {o!r}" for o in _options(args) if o not in known]
    if tool in ("python", ".venv/bin/python") and args and args[0].endswith(".py"):
        script = ROOT / args[0]
        if not script.exists():
            return [f"no script {args[0]}"]
        source = script.read_text()
        return [f"{args[0]} has no option {o!r}" for o in _options(args[1:]) if f'"{o}"' not in source]
    return []


def shell_lines(path: Path) -> list[str]:
    lines = []
    for block in blocks(path):
        if block.lang in ("sh", "console", "bash", "shell"):
            lines += [line for line in block.code.splitlines() if line.strip()]
    return lines


# --- the README ------------------------------------------------------------------------


def test_readme_is_at_most_200_lines() -> None:
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= MAX_README_LINES, f"README.md has {count} lines; move detail to docs/"


def test_first_example_all_reduces_eagerly_and_in_a_tf_function_and_shows_its_output() -> None:
    first = python_blocks(README)[0]
    assert "allreduce.all_reduce(" in first.code and "@tf.function" in first.code
    assert first.output is not None, "the first example shows what it prints"


@pytest.mark.timeout(SNIPPET_TIMEOUT_S + 30)
@pytest.mark.parametrize("block", python_blocks(README), ids=lambda b: b.name)
def test_readme_python_blocks_run_as_shown(block: Block) -> None:
    """Each block prints exactly its text block and no AutoGraph warning (the first
    example included)."""
    check_runs_as_shown(block)


@pytest.mark.timeout(SNIPPET_TIMEOUT_S + 30)
def test_a_snippet_on_stdin_shows_autograph_warnings() -> None:
    """The premise of the AutoGraph check: fed on stdin, a function that AutoGraph
    converts has no source to read, and TensorFlow warns."""
    code = "import tensorflow as tf\n\n@tf.function\ndef f(x):\n    return x + 1\n\nprint(int(f(1)))\n"
    result = run_snippet(code)
    assert result.stdout.strip() == "2"
    assert "AutoGraph" in result.stderr


def test_readme_commands_exist() -> None:
    lines = shell_lines(README)
    assert any(line.startswith("make bench") for line in lines)
    assert any(line.startswith("make test") for line in lines)
    problems = [f"{line!r}: {p}" for line in lines for p in command_problems(line)]
    assert not problems, problems


def test_readme_names_every_extra_as_installed() -> None:
    text = README.read_text(encoding="utf-8")
    for extra in extras():
        assert f"`allreduce[{extra}]`" in text, extra


def test_every_algorithm_is_documented() -> None:
    """Each registered algorithm has a row in docs/algorithms.md that agrees with the
    registry on where it runs and whether it takes ``#k``."""
    rows = {}
    for line in ALGORITHMS.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            rows[cells[0].strip("`")] = cells
    pairs = re.search(r"Any two of `([^`]+)`", ALGORITHMS.read_text(encoding="utf-8"))
    assert pairs, "docs/algorithms.md lists the algorithms a hierarchical pair may combine"
    composable = {name for name in algorithm_names() if get_algorithm(name).composable}
    assert set(pairs.group(1).split()) == composable
    for name in algorithm_names():
        info = get_algorithm(name)
        assert name in rows, f"docs/algorithms.md has no row for {name!r}"
        _, where, shards, what = rows[name]
        for device_type in info.device_types:
            assert device_type in where, (name, where)
        assert (shards == "\N{EN DASH}") == (not info.takes_shards), (name, shards)
        assert what, name
    assert "A/B" in rows
