"""Integration fixtures: environments "deployed" on the moto server the way the CDK app deploys.

`deploy` creates, through the AWS APIs, what one environment's stacks create and what the CLI
finds through SSM `/sds/<env>/...`: a versioned registry bucket, the inference function with
published versions and alias `live`, a CodeDeploy application and deployment group, and (on
request) the training cluster and task definition. `cli` runs the real `sds` entry point with
`--aws` semantics (SDS_TARGET=aws), a throwaway lock file and a fixed actor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sds.ops.workspace import Workspace
from tests.integration.deployed import ACTOR, ROOT, CliResult, Deployed, deploy_environment


@pytest.fixture
def deploy(aws: Any) -> Callable[..., Deployed]:
    def make(env: str, *, training: bool = False, registers_in: Deployed | None = None) -> Deployed:
        return deploy_environment(aws, env, training=training, registers_in=registers_in)

    return make


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: Any) -> Iterator[Path]:
    """The repository's cdk.json, with local state and the lock file in a temporary folder."""
    del aws  # the environment variables pointing the SDK at moto are set by then
    monkeypatch.setenv("SDS_PROJECT_DIR", str(ROOT))
    monkeypatch.setenv("SDS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SDS_LOCK_FILE", str(tmp_path / "models.lock.json"))
    monkeypatch.setenv("SDS_ACTOR", ACTOR)
    monkeypatch.setenv("SDS_TARGET", "aws")
    for env in ("DEV", "STAGING", "PROD"):
        monkeypatch.delenv(f"SDS_REGISTRY_{env}", raising=False)
    yield tmp_path / "models.lock.json"


@pytest.fixture
def workspace(project: Path) -> Callable[[], Workspace]:
    del project
    return Workspace.discover


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    from sds.cli.main import main

    del project

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
