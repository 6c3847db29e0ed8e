"""The documents under docs/: snippets run as shown, commands and links exist, and no
text lives in two places (see CONTRIBUTING.md, "The documentation's tests")."""

from __future__ import annotations

import ast
import itertools
import re
import textwrap
from pathlib import Path

import pytest

from tests.unit.test_readme import (
    README,
    ROOT,
    SNIPPET_TIMEOUT_S,
    Block,
    blocks,
    check_runs_as_shown,
    command_problems,
    python_blocks,
    shell_lines,
)

DOCS = sorted((ROOT / "docs").glob("*.md"))
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
EVERY_DOCUMENT = [README, CONTRIBUTING, *DOCS]

#: Python blocks that cannot run here, found by a line they hold, with the reason.
NOT_RUNNABLE = {
    ("multiworker.md", "SlurmClusterResolver("): "needs a Slurm job and a Kubernetes cluster",
    ("multiworker.md", '"host0:2222"'): "connects to servers on other hosts",
}
#: Python blocks that start worker processes.
MULTIWORKER = {("multiworker.md", "local_cluster("), ("multiworker.md", "ray_cluster(")}

#: The shortest text that may not appear in two documents.
MIN_SHARED_CHARS = 200


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _why_not_run(block: Block) -> str | None:
    for (name, line), reason in NOT_RUNNABLE.items():
        if block.path.name == name and line in block.code:
            return reason
    return None


def _runnable() -> list:
    params = []
    for path in DOCS:
        for block in python_blocks(path):
            if block.excerpt_of or _why_not_run(block):
                continue
            multi = any(block.path.name == n and line in block.code for n, line in MULTIWORKER)
            marks = [pytest.mark.multiworker] if multi else []
            if "ray_cluster(" in block.code:  # needs the ray extra
                marks += [pytest.mark.ray, pytest.mark.skipif(not _has_ray(), reason="ray is not installed")]
            params.append(pytest.param(block, id=block.name, marks=marks))
    return params


@pytest.mark.timeout(SNIPPET_TIMEOUT_S + 30)
@pytest.mark.parametrize("block", _runnable())
def test_doc_python_blocks_run_as_shown(block: Block) -> None:
    check_runs_as_shown(block)


def test_only_the_listed_blocks_are_left_unrun() -> None:
    unrun = [b for path in DOCS for b in python_blocks(path) if _why_not_run(b)]
    assert len(unrun) == len(NOT_RUNNABLE), [b.name for b in unrun]


def _excerpts() -> list[Block]:
    return [b for path in EVERY_DOCUMENT for b in python_blocks(path) if b.excerpt_of]


@pytest.mark.parametrize("block", _excerpts(), ids=lambda b: b.name)
def test_excerpts_appear_verbatim_in_their_files(block: Block) -> None:
    source = (ROOT / block.excerpt_of).read_text(encoding="utf-8").splitlines()
    wanted = block.code.rstrip("\n").splitlines()
    for start in range(len(source) - len(wanted) + 1):
        window = textwrap.dedent("\n".join(source[start : start + len(wanted)])).splitlines()
        if window == wanted:
            return
    pytest.fail(f"{block.name} is not a verbatim excerpt of {block.excerpt_of}")


@pytest.mark.parametrize("path", [CONTRIBUTING, *DOCS], ids=lambda p: p.name)
def test_doc_commands_exist(path: Path) -> None:
    problems = [f"{line!r}: {p}" for line in shell_lines(path) for p in command_problems(line)]
    assert not problems, problems


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [
        target
        for target in re.findall(r"\]\(([^)\s]+)\)", text)
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    ] + [target for target in re.findall(r"\]\((#[^)\s]+)\)", text)]


@pytest.mark.parametrize("path", EVERY_DOCUMENT, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    for target in _links(path):
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        assert resolved.exists(), f"{path.name} links to {target}, which does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{path.name} links to {target}: no such heading"


def test_every_document_is_linked_from_the_readme_or_contributing() -> None:
    linked = {
        (path.parent / target.partition("#")[0]).resolve()
        for path in (README, CONTRIBUTING)
        for target in _links(path)
    }
    missing = [str(doc.relative_to(ROOT)) for doc in DOCS if doc.resolve() not in linked]
    assert not missing, f"not linked from README.md or CONTRIBUTING.md: {missing}"


def _units(path: Path) -> set[str]:
    """Paragraphs, and lines such as table rows, of at least ``MIN_SHARED_CHARS``
    characters, with whitespace normalised."""
    out = set()
    for paragraph in re.split(r"\n[ \t]*\n", path.read_text(encoding="utf-8")):
        for unit in [paragraph, *paragraph.splitlines()]:
            text = " ".join(unit.split())
            if len(text) >= MIN_SHARED_CHARS:
                out.add(text)
    return out


def test_no_paragraph_is_in_two_documents() -> None:
    units = {path: _units(path) for path in EVERY_DOCUMENT}
    shared = [
        f"{a.name} and {b.name}: {text[:120]}..."
        for a, b in itertools.combinations(EVERY_DOCUMENT, 2)
        for text in sorted(units[a] & units[b])
    ]
    assert not shared, "text in two places; give it one home and link to it:\n" + "\n".join(shared)


def test_the_shared_text_check_can_fail(tmp_path: Path) -> None:
    paragraph = "A paragraph long enough to count. " * 8
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    first.write_text(f"# A\n\n{paragraph}\n")
    second.write_text(f"# B\n\nintro\n\n{paragraph.replace(' ', chr(10), 3)}\n")
    assert _units(first) & _units(second)
    assert all(b.lang != "python" for b in blocks(first))


def _headings(path: Path) -> list[tuple[int, str]]:
    text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [(len(m.group(1)), m.group(2)) for m in re.finditer(r"^(#+) (.*)$", text, flags=re.M)]


@pytest.mark.parametrize("path", EVERY_DOCUMENT, ids=lambda p: p.name)
def test_every_document_opens_with_its_one_title_and_skips_no_heading_level(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), f"{path.name} does not open with a title ('# ...')"
    levels = [level for level, _ in _headings(path)]
    assert levels.count(1) == 1, f"{path.name} has {levels.count(1)} titles"
    skips = [h for (a, _), h in zip([(0, ""), *_headings(path)], _headings(path)) if h[0] > a + 1]
    assert not skips, f"{path.name}: headings deeper than the one before plus one: {skips}"


def _unused_names(code: str) -> list[str]:
    """Names a snippet assigns and never reads, except those of its last line of code
    (the result it shows)."""
    tree = ast.parse(code)
    last = max(n.lineno for n in ast.walk(tree) if isinstance(n, ast.stmt) and not hasattr(n, "body"))
    stored: dict[str, int] = {}
    loaded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                stored.setdefault(node.id, node.lineno)
            else:
                loaded.add(node.id)
    return sorted(n for n, line in stored.items() if n not in loaded and line != last and n != "_")


@pytest.mark.parametrize("block", [p.values[0] for p in _runnable()], ids=lambda b: b.name)
def test_doc_python_blocks_use_every_name_they_make(block: Block) -> None:
    assert not _unused_names(block.code), f"{block.name} makes names it never uses"


def test_the_unused_name_check_can_fail() -> None:
    code = "import math\nops = math.pi\nstrategy = object()\nprint(ops)\nresult = ops * 2\n"
    assert _unused_names(code) == ["strategy"]


def test_the_benchmark_sample_table_has_the_columns_the_command_prints() -> None:
    from allreduce.bench.report import format_header

    header = format_header().splitlines()[-1]
    sample = next(b for b in blocks(ROOT / "docs" / "benchmark.md") if "# allreduce-bench:" in b.code)
    lines = sample.code.splitlines()
    assert header in lines, f"the sample's column line is not the command's:\n{header}"
    columns = len(header.lstrip("# ").split())
    rows = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    assert rows and all(len(row) == columns for row in rows), [r for r in rows if len(r) != columns]
