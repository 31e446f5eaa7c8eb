"""Security suite fixtures: one small real model (trained once per session), and a summary.

The model is trained with the real training code (`training.train.train`) on 3000 generated
events with 10 trees into a `file://` registry, in about two seconds on 2 cores; every suite that
needs a real registered model shares it and copies the registry before changing anything.

At the end of the run, `pytest_terminal_summary` prints the counts the suites recorded through
`security_report.record` (requests sent, status codes answered, faults injected, steps run), so
they show up in every `make test` log, captured output or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from security_model import MODEL, TRAINER, SecurityModel
from security_report import summary_lines

from sds.kernel.registry import open_registry
from training.data import write_jsonl
from training.synthetic import generate_activity
from training.train import STEPS, Progress, TrainParams, train


class MetricsSink:
    """Collects the metrics an InferenceApp emits (instead of EMF lines on stdout)."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, float, dict[str, str]]] = []

    def __call__(self, values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
        self.emitted.extend((name, value, dict(dimensions)) for name, value in values.items())

    def names(self) -> list[str]:
        return [name for name, _, _ in self.emitted]


@pytest.fixture(scope="session")
def security_model(tmp_path_factory: pytest.TempPathFactory) -> SecurityModel:
    data = write_jsonl(
        generate_activity(3000, seed=11), tmp_path_factory.mktemp("data") / "h.jsonl"
    )
    root = tmp_path_factory.mktemp("registry")
    version = train(
        data=data,
        registry=open_registry(root.as_uri(), MODEL),
        params=TrainParams(max_iter=10, seed=2),
        actor=TRAINER,
        reason="security suite fixture",
        progress=Progress(STEPS, enabled=False),
    )
    features = tmp_path_factory.mktemp("features") / "features.db"
    return SecurityModel(registry_root=root, version=version, feature_store=features)


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
def tmp_registry(tmp_path: Path, security_model: SecurityModel) -> SecurityModel:
    """A private copy of the trained registry that a test may tamper with."""
    root = security_model.copy_registry(tmp_path / "registry")
    return SecurityModel(
        registry_root=root,
        version=security_model.version,
        feature_store=security_model.feature_store,
    )


@pytest.fixture(scope="session")
def audited_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every environment (and a variant) synthesized once, with nag acknowledgments recorded."""
    from security_templates import synthesize

    work = tmp_path_factory.mktemp("synth")
    return synthesize(work / "models.lock.json", work / "cdk.out")
