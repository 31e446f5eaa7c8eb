"""Every relative link in the README and the docs leads somewhere.

Given the Markdown files users read, when each relative link `[text](path#anchor)` outside code
blocks is followed, then the file exists and, for a Markdown file, the anchor is one of its
headings as GitHub renders them: a section renumbered or renamed cannot leave links pointing
at nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "SECURITY.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(path: Path) -> list[tuple[int, str]]:
    """The numbered lines of a Markdown file outside its fenced code blocks."""
    lines, inside = [], False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside:
            lines.append((number, line))
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as
    hyphens, and `-1`, `-2`, ... after a repeated one."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose(path):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links() -> list[tuple[Path, int, str]]:
    return [
        (path, number, target)
        for path in DOCS
        for number, line in _prose(path)
        for target in LINK.findall(line)
        if not re.match(r"[a-z]+:", target)
    ]


LINKS = relative_links()


def test_the_slugs_are_githubs() -> None:
    assert {"10-read-the-drift-report", "configuration-cdkjson--environmentsenvinfra"} <= anchors(
        ROOT / "docs" / "runbook.md"
    ) | anchors(ROOT / "docs" / "infrastructure.md")


def test_the_docs_link_to_each_other_at_all() -> None:
    assert len(LINKS) > 20
    assert any("#" in target for _, _, target in LINKS)


@pytest.mark.parametrize(
    ("path", "target"),
    [(path, target) for path, _, target in LINKS],
    ids=[f"{path.name}:{number}" for path, number, _ in LINKS],
)
def test_a_relative_link_leads_somewhere(path: Path, target: str) -> None:
    file, _, anchor = target.partition("#")
    linked = (path.parent / file) if file else path
    assert linked.exists(), f"{path.name} links to {target}: no file {linked}"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{path.name} links to {target}: no such heading"
