"""Every `sds` command shown in the README and the docs is one the CLI accepts.

Given the Markdown files users read, when each `sds ...` line inside a code block is parsed by the
real argument parser, then none is a usage error: options renamed or removed in the code cannot
silently stay in the docs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sds.cli.main import build_parser
from sds.kernel.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, int, str]]:
    found = []
    for path in DOCS:
        inside = False
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.lstrip().startswith("```"):
                inside = not inside
                continue
            text = line.strip()
            text = re.sub(r"^\$ ", "", text)
            text = re.sub(r"^SDS_TARGET=aws ", "", text)
            if inside and text.startswith("sds "):
                found.append((path.name, number, text))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands_at_all() -> None:
    assert len(COMMANDS) > 20
    assert {name for name, _, _ in COMMANDS} >= {"README.md", "runbook.md", "rollback.md"}


@pytest.mark.parametrize(
    "command", [c[2] for c in COMMANDS], ids=[f"{c[0]}:{c[1]}" for c in COMMANDS]
)
def test_a_documented_command_parses(command: str) -> None:
    words = shlex.split(command, comments=True)
    for stop in ("|", ">", "&&", ";"):
        if stop in words:
            words = words[: words.index(stop)]
    try:
        build_parser().parse_args(words[1:])
    except UsageError as exc:
        pytest.fail(f"{command!r} is not a valid sds command: {exc}")
