"""The refusals (exit 3) that each list of exit codes names: `sds --help`, the CLI's and the
errors' module docstrings, the README and the runbook.

Given each list's "3 refused (...)", then it names every kind of refusal a user meets, the same
in each: a list that gains one cannot leave the others behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sds.cli.main
import sds.kernel.errors
from sds.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]

# What every list says is refused, in its words (a rollback's target, a batch run's --out).
REFUSALS = [
    "gate failed",
    "a concurrent change won",
    "a rollback's target was never served by that environment or its Lambda version cannot serve",
    "a batch run's --out holds another run (of other input, say) or other files",
]


def lists() -> dict[str, str]:
    return {
        "sds --help": build_parser().format_help(),
        "sds/cli/main.py": sds.cli.main.__doc__ or "",
        "sds/kernel/errors.py": sds.kernel.errors.__doc__ or "",
        "README.md": (ROOT / "README.md").read_text(),
        "docs/runbook.md": (ROOT / "docs" / "runbook.md").read_text(),
    }


def refused(text: str) -> str:
    """The list's refusals: the words in the parentheses after "3 refused", on one line."""
    flat = " ".join(text.replace("`", "").split())
    (start,) = [m.end() for m in re.finditer(r"\b3 refused \(", flat)]
    depth, end = 1, start
    while depth:
        depth += {"(": 1, ")": -1}.get(flat[end], 0)
        end += 1
    return flat[start : end - 1]


@pytest.mark.parametrize("where", list(lists()))
def test_each_list_of_exit_codes_names_every_refusal(where: str) -> None:
    said = refused(lists()[where])
    assert [r for r in REFUSALS if r not in said] == [], said
