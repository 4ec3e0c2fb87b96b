"""The documentation: a short README with the two commands, links that resolve, no paths outside the
project, and every benchmark table headed by when, at which commit and on what machine it was
measured. Reads files only (and asks git whether a commit exists): no Ray, no models."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

INSTALL_AND_RUN = "scripts/install.sh && .venv/bin/serve run serve_config.yaml"
TEST_COMMAND = "scripts/test.sh"
# Generated from the code by their own change; until they exist, links to them are skipped, not failed.
GENERATED = {ROOT / "docs" / "protocol.md", ROOT / "docs" / "configuration.md"}
# The line above every table in docs/benchmarks.md (no heading between them), e.g.
#   Measured: 2026-11-22 09:36 UTC · commit 66b02bb · 2 shared cores, no GPU (this project's CI machine)
MEASURED = re.compile(r"^Measured: (\d{4}-\d{2}-\d{2})(?: \d{2}:\d{2} UTC)? · commit ([0-9a-f]{7,40}) · (\S.*)$")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
# a path into a directory called shared (../shared, /work/shared/, shared/notes), not avatar-shared/
SHARED = re.compile(r"(?<![\w.-])shared/|\.\./shared\b")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def code_lines(text: str) -> list[str]:
    """Lines inside fenced code blocks, stripped."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            out.append(line.strip())
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text()
    found = {slug(line.lstrip("#")) for _, line in prose_lines(text) if re.match(r"#{1,6} ", line)}
    return found | set(re.findall(r"<a id=\"([^\"]+)\"", text))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_readme_is_at_most_250_lines():
    n = len(README.read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail into docs/"


def test_readme_gives_the_two_commands():
    commands = code_lines(README.read_text())
    assert INSTALL_AND_RUN in commands, "the install-and-run command, alone on a line in a code block"
    assert TEST_COMMAND in commands, "the test command, alone on a line in a code block"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert TEST_COMMAND in ci, ".ci/run calls exactly the README's test command"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page):
    broken, pending = [], []
    for n, line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            name, _, fragment = target.partition("#")
            path = (page.parent / name).resolve() if name else page
            where = f"{rel(page)}:{n}: {target}"
            if path in GENERATED and not path.exists():
                pending.append(where)
            elif ROOT not in path.parents or not path.exists():
                broken.append(where)
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                broken.append(f"{where} (no such heading)")
    assert not broken, "links to nothing:\n" + "\n".join(broken)
    if pending:
        pytest.skip("links to pages generated from code, not written yet: " + "; ".join(pending))


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_no_path_outside_the_project(page):
    hits = [f"{rel(page)}:{n}: {line.strip()}" for n, line in enumerate(page.read_text().splitlines(), 1)
            if SHARED.search(line)]
    assert not hits, "a shared/ path is not part of the project:\n" + "\n".join(hits)


def benchmark_tables() -> list[tuple[int, str | None]]:
    """Each table in docs/benchmarks.md: its first line's number and the Measured line above it (None
    when a heading or the top of the page comes first)."""
    lines = prose_lines((ROOT / "docs" / "benchmarks.md").read_text())
    tables = []
    for i, (n, line) in enumerate(lines):
        if not line.startswith("|") or (i and lines[i - 1][1].startswith("|") and lines[i - 1][0] == n - 1):
            continue
        header = None
        for _, before in reversed(lines[:i]):
            if MEASURED.match(before):
                header = before
                break
            if re.match(r"#{1,6} ", before):
                break
        tables.append((n, header))
    return tables


def test_every_benchmark_table_names_its_date_commit_and_machine():
    tables = benchmark_tables()
    assert tables, "docs/benchmarks.md has no tables"
    missing = [n for n, header in tables if header is None]
    assert not missing, (f"docs/benchmarks.md: tables at lines {missing} have no line "
                         f"'Measured: YYYY-MM-DD[ HH:MM UTC] · commit <hash> · <machine>' above them")
    for n, header in tables:
        date, commit, machine = MEASURED.match(header).groups()
        datetime.date.fromisoformat(date)
        assert machine.strip(), f"line {n}: name the machine"


def test_every_benchmark_commit_exists():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    shallow = subprocess.run([git, "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
                             capture_output=True, text=True).stdout.strip()
    if shallow != "false":
        pytest.skip("a shallow clone lacks the history the tables name")
    commits = {MEASURED.match(header).group(2) for _, header in benchmark_tables() if header}
    unknown = [c for c in sorted(commits)
               if subprocess.run([git, "-C", str(ROOT), "cat-file", "-e", f"{c}^{{commit}}"]).returncode]
    assert not unknown, f"docs/benchmarks.md names commits git does not know: {unknown}"
