"""The tables the docs show are the tables the commands print.

Given the runbook's samples of `sds models`, `sds envs` and `sds history`, when the same commands
run on a local project (versions registered directly in its registry: no training), then each
prints the columns its sample shows, in the same order: a column renamed, added or dropped in the
code cannot silently stay in the docs. The values (times, paths, sha256) are the run's own and are
not compared.
"""

from __future__ import annotations

import argparse
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sds.cli.main import build_parser, main
from sds.kernel.registry import open_registry

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"


def sample_header(path: Path, command: str) -> str:
    """The line after the first `$ sds COMMAND` line (exactly) inside a fenced block of `path`."""
    inside = False
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside and line.strip() == f"$ sds {command}":
            return lines[number + 1].strip()
    raise AssertionError(f"{path.name} shows no sample of `sds {command}`")


def columns(header: str) -> list[str]:
    """A table header's column names: separated by two spaces or more (`CREATED (UTC)` is one)."""
    return re.split(r"\s{2,}", header.strip())


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the project's cdk.json with local state in a temporary folder, and dev holding
    two registered versions, the first promoted."""
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    monkeypatch.setenv("SDS_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("SDS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SDS_LOCK_FILE", str(tmp_path / "models.lock.json"))
    monkeypatch.setenv("SDS_ACTOR", "alice@laptop")
    for name in ("SDS_TARGET", "SDS_REGISTRY_DEV", "SDS_REGISTRY_STAGING", "SDS_REGISTRY_PROD"):
        monkeypatch.delenv(name, raising=False)
    registry = open_registry((tmp_path / "state" / "registries" / "dev").as_uri(), "fraud")
    for tag in ("one", "two"):
        registry.register(
            {"model.onnx": f"onnx {tag}".encode(), "model.skops": tag.encode()},
            {"metrics": {"roc_auc": 0.93, "pr_auc": 0.41, "expected_calibration_error": 0.01}},
            actor="alice@laptop",
        )
    assert main(["promote", "1", "--to", "dev", "--reason", "first model"]) == 0
    yield tmp_path


@pytest.mark.parametrize(
    ("command", "runs"),
    [
        ("models", ["models"]),
        ("envs", ["envs"]),
        ("history --env prod", ["history", "--env", "dev"]),  # dev's: the same table
    ],
)
def test_a_table_in_the_runbook_has_the_columns_the_command_prints(
    project: Path, capsys: pytest.CaptureFixture[str], command: str, runs: list[str]
) -> None:
    documented = columns(sample_header(RUNBOOK, command))
    capsys.readouterr()
    assert main(runs) == 0
    printed = capsys.readouterr().out.splitlines()
    assert columns(printed[0]) == documented
    assert len(printed) > 1  # a row under it: the header is the table's, not a message


def test_the_runbooks_calls_to_a_local_server_use_the_port_sds_serve_listens_on() -> None:
    # The runbook starts `sds serve` without --port: a call to any other port finds nothing.
    (serve,) = [
        parser
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, parser in action.choices.items()
        if name == "serve"
    ]
    (port,) = [a.default for a in serve._actions if "--port" in a.option_strings]
    called = re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", RUNBOOK.read_text())
    assert called, "the runbook shows no call to a local server: this test checks nothing"
    assert {int(p) for p in called} == {port}
