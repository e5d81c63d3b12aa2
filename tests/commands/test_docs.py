"""The README and docs/ cannot rot: their runnable commands run, their relative links resolve.

A fenced block with the info string `sh runnable` holds cheap commands (docs/index.md says which): each of its
lines that starts with `inception-keras ` goes through `inception_keras.cli.main` in a temporary directory and
must exit 0. Every relative link `[text](path#anchor)` must name an existing file and, in a Markdown file, one of
its headings (GitHub's anchors).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from inception_keras.cli import main

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = "sh runnable"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Each fenced block of a Markdown text as (info string, lines)."""
    blocks, info, lines = [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if info is None and stripped.startswith("```"):
            info, lines = stripped[3:].strip(), []
        elif info is not None and stripped == "```":
            blocks.append((info, lines))
            info = None
        elif info is not None:
            lines.append(stripped)
    return blocks


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def runnable_commands() -> list[tuple[str, str]]:
    """(page name, command line) for every `inception-keras ...` line of a runnable block."""
    return [(page.relative_to(ROOT).as_posix(), line) for page in PAGES
            for info, lines in fenced_blocks(page.read_text()) if info == RUNNABLE
            for line in lines if line.startswith("inception-keras ")]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown file's headings, a repeated one numbered as GitHub does."""
    seen: dict[str, int] = {}
    for line in prose_lines(page.read_text()):
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            name = anchor(match.group(1))
            seen[name] = seen.get(name, -1) + 1
            if seen[name]:
                seen[f"{name}-{seen[name]}"] = 0
    return set(seen)


def broken_links(page: Path) -> list[str]:
    """The relative links of a page that name a missing file or heading."""
    broken = []
    for line in prose_lines(page.read_text()):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{target} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{target} (no such heading)")
    return broken


def test_readme_and_docs_have_runnable_commands():
    pages = {page for page, _ in runnable_commands()}
    assert "README.md" in pages and any(page.startswith("docs/") for page in pages)


@pytest.mark.parametrize("page, line", runnable_commands(),
                         ids=[f"{page}:{shlex.split(line, comments=True)[1]}" for page, line in runnable_commands()])
def test_runnable_command_exits_0(page, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(shlex.split(line, comments=True)[1:])
    except SystemExit as exit_:  # --help
        code = exit_.code
    assert code == 0, f"{page}: {line}: {capsys.readouterr().err}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_anchor_follows_github():
    assert anchor("Against torchvision (`make bench-peer`)") == "against-torchvision-make-bench-peer"
    assert anchor("Beyond one device: the scale story") == "beyond-one-device-the-scale-story"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading) [file](missing.md) [heading](other.md#nothing) `[code](x.md)`\n"
                    "```\n[fenced](y.md)\n```\n[web](https://example.org)\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#nothing (no such heading)"]


def test_the_benchmarks_page_is_what_the_committed_results_give():
    """docs/benchmarks.md is generated (`make bench-report`) from benchmarks/results/*.json, never edited by hand."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert text == report.render()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == report.render_readme(readme) and "<!-- bench_ranking -->\n| proxy | τ |" in readme
    for name in report.ORDER:
        if (ROOT / "benchmarks" / "results" / f"{name}.json").exists():
            assert f"`benchmarks/{name}.py`" in text
