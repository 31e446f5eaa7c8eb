"""Security suite fixtures: a tamperable copy of the session's model, metrics, and a summary.

The model is the one every suite shares (`trained`, tests/conftest.py): the security suites
copy its registry before changing anything.

At the end of the run, `pytest_terminal_summary` prints the counts the suites recorded through
`security_report.record` (requests sent, status codes answered, faults injected, steps run), so
they show up in every `make test` log, captured output or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.security.security_report import summary_lines
from tests.support.trained_model import TrainedModel


class MetricsSink:
    """Collects the metrics an InferenceApp emits (instead of EMF lines on stdout)."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, float, dict[str, str]]] = []

    def __call__(self, values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
        self.emitted.extend((name, value, dict(dimensions)) for name, value in values.items())

    def names(self) -> list[str]:
        return [name for name, _, _ in self.emitted]


@pytest.fixture
def metrics() -> MetricsSink:
    return MetricsSink()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = summary_lines()
    if not lines:
        return
    terminalreporter.section("security suite counts")
    for line in lines:
        terminalreporter.write_line(line)


@pytest.fixture
def tmp_registry(tmp_path: Path, trained: TrainedModel) -> TrainedModel:
    """A private copy of the trained registry that a test may tamper with."""
    root = trained.copy_registry(tmp_path / "registry")
    return replace(trained, registry_root=root)


@pytest.fixture(scope="session")
def audited_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every environment (and a variant) synthesized once, with nag acknowledgments recorded."""
    from tests.security.security_templates import synthesize

    work = tmp_path_factory.mktemp("synth")
    return synthesize(work / "models.lock.json", work / "cdk.out")
