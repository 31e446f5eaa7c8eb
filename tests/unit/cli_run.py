"""Running `sds` in-process for the CLI's tests: its exit code, stdout and stderr."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from sds.cli.main import main


@dataclass
class Ended:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error_line(self) -> str:
        lines = self.err.strip().splitlines()
        assert [line for line in lines if line.startswith("sds:")] == [lines[-1]], lines
        return lines[-1]


def sds(capsys: pytest.CaptureFixture[str], *argv: str) -> Ended:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return Ended(code, captured.out, captured.err)
