"""Every `sds` command shown in the README and the docs is one the CLI accepts.

Given the Markdown files users read, when each `sds ...` line inside a code block is parsed by the
real argument parser, then none is a usage error: options renamed or removed in the code cannot
silently stay in the docs. Inline commands in running text and tables (`sds rollback --env ENV
[--to VERSION]`) are shapes with placeholders, not lines to run: of those, every command word must
be an `sds` command and every option one that command takes.
"""

from __future__ import annotations

import argparse
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


# Inline commands: `sds ...` in running text and tables ------------------------------------------
#
# Inline text shows a command's shape rather than a line to run: placeholders (`VERSION`,
# `s3://...`), optional parts (`[--to VERSION]`) and alternatives (`score\|backfill`,
# `--clock wall\|events`). So these are not parsed whole; each option they name must be one the
# command takes, and each command word one `sds` has.

_FENCE = re.compile(r"^ *```.*?^ *```[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LEADING_VARIABLES = re.compile(r"^(?:[A-Z][A-Z0-9_]*=\S+ )*")
_COMMAND_WORD = re.compile(r"^[a-z][a-z-]*(?:\|[a-z][a-z-]*)*$")
_OPTION = re.compile(r"^(--?[A-Za-z][A-Za-z0-9-]*)(?:=.*)?$")
_SHELL_STOPS = {"|", ">", ">>", "&&", "||", ";", "#"}


def inline_commands() -> list[tuple[str, int, str]]:
    """Every code span outside fenced blocks that starts with `sds ` (after any `VAR=value`), as
    (file, line, text with its whitespace and Markdown's `\\|` escapes folded)."""
    found = []
    for path in DOCS:
        text = path.read_text()
        # Fenced blocks are the other test's; blanking them keeps the line numbers.
        prose = _FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)
        for span in _CODE_SPAN.finditer(prose):
            code = " ".join(span.group(2).replace("\\|", "|").split())
            code = _LEADING_VARIABLES.sub("", code)
            if code.startswith("sds "):
                found.append((path.name, prose.count("\n", 0, span.start()) + 1, code))
    return found


def _options_of(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def unknown_options(command: str, parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with inline `command`: each option no command it names takes, and each
    command word `sds` does not have (empty when all is well, and for a span that is not a command
    line, such as an alarm's text starting with `sds prod:`)."""
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote in a shape like `sds serve`'s
        words = command.split()
    commands = _commands(parser)
    named: list[str] = []  # the command and its alternatives, once found
    problems: list[str] = []
    value_next = False  # the word after `--project-dir` is its value, not the command
    for word in words[1:]:
        if word in _SHELL_STOPS:
            break
        if value_next:
            value_next = False
            continue
        for part in word.strip("[]()").split("|"):
            option = _OPTION.match(part.strip("[](),."))
            if option is not None:
                flag = option.group(1)
                if not named and flag not in _options_of(parser):
                    # Whether it takes a value is unknown, so where the command is: stop here.
                    return [*problems, f"{flag} is not an option of sds before a command"]
                if not named and "=" not in part:
                    value_next = parser._option_string_actions[flag].nargs != 0
                for name in named:
                    if flag not in _options_of(commands[name]):
                        problems.append(f"{flag} is not an option of sds {name}")
        if not named and not word.startswith("-") and not word.startswith("["):
            if _COMMAND_WORD.match(word) is None:
                return []  # not a command line: `sds prod: fraud v8 flags ...`
            named = word.split("|")
            problems += [f"{name} is not an sds command" for name in named if name not in commands]
            named = [name for name in named if name in commands]
    return problems


INLINE = inline_commands()


def test_the_docs_show_inline_commands_at_all() -> None:
    # A pattern that stopped matching would make the next test pass on nothing.
    assert len(INLINE) > 150
    texts = [text for _, _, text in INLINE]
    assert "sds --aws score|backfill --env ENV --data s3://... --out s3://..." in texts
    assert "sds rollback --env ENV [--to VERSION]" in texts
    assert {name for name, _, _ in INLINE} >= {"README.md", "runbook.md", "rollback.md"}


def test_every_inline_command_uses_only_options_its_command_takes() -> None:
    parser = build_parser()
    problems = [
        f"{name}:{line}: `{text}`: {problem}"
        for name, line, text in INLINE
        for problem in unknown_options(text, parser)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("sds rollback --env ENV [--to VERSION]", []),
        ("sds --aws score|backfill --env ENV --data s3://... --out s3://...", []),
        ("sds ingest FILE [--env ENV] [--clock wall|events]", []),
        ("sds history --env dev --json | head --lines 1", []),
        ("sds prod: fraud v8 flags more than 3x --the rate", []),
        ("sds --project-dir DIR models --env dev", []),
        ("sds --project-dir=DIR models --env dev", []),
        ("sds rollback --env ENV [--too VERSION]", ["--too is not an option of sds rollback"]),
        ("sds --aws rollback --env dev --data x", ["--data is not an option of sds rollback"]),
        ("sds --env dev status", ["--env is not an option of sds before a command"]),
        ("sds score|backfil --env ENV", ["backfil is not an sds command"]),
        (
            "sds score|backfill --env ENV --version 3",
            ["--version is not an option of sds backfill"],
        ),
    ],
)
def test_the_inline_check_finds_wrong_options_and_reads_shapes(
    command: str, expected: list[str]
) -> None:
    assert unknown_options(command, build_parser()) == expected
