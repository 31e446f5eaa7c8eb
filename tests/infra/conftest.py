"""Infrastructure test fixtures: the whole CDK app, synthesized once per session.

The machine running the suite has 2 cores, so the expensive things happen once: the Lambda bundle
is built (or taken from build/), the app is synthesized in-process for the assertions, and the
real CDK CLI (`npx --no-install cdk synth`) runs in the background meanwhile, with no AWS
credentials and a throwaway CDK_HOME. What the tests import (pins, the variant, synthesis) is
in synth.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import app as cdk_app
from sds.config import parse_project
from sds.kernel.lock import LockFile
from stacks.bundling import build_bundle, find_python
from tests.infra.synth import (
    CDK_CLI,
    PINS,
    ROOT,
    CliSynth,
    NagAudit,
    SynthesizedApp,
    audit_nag,
    cdk_context,
    cli_environment,
    session_context,
    synthesize,
)


@pytest.fixture(scope="session")
def lambda_python() -> str:
    return find_python(cdk_app.lambda_python_candidates())


@pytest.fixture(scope="session")
def lambda_bundle(lambda_python: str) -> Path:
    """The inference bundle exactly as `app.py` builds it (x86_64)."""
    return build_bundle(cdk_app.lambda_bundle_spec(architecture="x86_64", python=lambda_python))


@pytest.fixture(scope="session")
def lock_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lock") / "models.lock.json"
    model = cdk_context()["model_name"]
    path.write_text(LockFile(model=model, pins=PINS).to_json())
    return path


@pytest.fixture(scope="session")
def cli_synth(tmp_path_factory: pytest.TempPathFactory, lambda_bundle: Path) -> Iterator[CliSynth]:
    """Start the real `cdk synth` of every environment early, in the background."""
    del lambda_bundle  # built first, so the CLI's app run finds it in build/
    work = tmp_path_factory.mktemp("cli")
    outdir, log = work / "cdk.out", work / "synth.log"
    if not CDK_CLI.exists():
        yield CliSynth(None, outdir, log, f"{CDK_CLI} is missing: run `make test` (npm ci)")
        return
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [str(CDK_CLI), "synth", "--quiet", "**", "--output", str(outdir)],
            cwd=ROOT,
            env=cli_environment(work / "cdk-home"),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
    synth = CliSynth(process, outdir, log)
    yield synth
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def synthesized(
    tmp_path_factory: pytest.TempPathFactory,
    lock_file: Path,
    lambda_python: str,
    cli_synth: CliSynth,
) -> SynthesizedApp:
    del cli_synth  # started first: the real CLI synthesizes on the other core meanwhile
    return synthesize(
        tmp_path_factory.mktemp("app") / "cdk.out",
        lock=lock_file,
        lambda_python=lambda_python,
        context=session_context(),
    )


@pytest.fixture(scope="session")
def environments(synthesized: SynthesizedApp) -> list[str]:
    return list(synthesized.project.environments)


@pytest.fixture(scope="session")
def nag_audit(lock_file: Path, lambda_python: str) -> NagAudit:
    """cdk-nag over the session app's construct tree, acknowledgments recorded (`audit_nag`)."""
    return audit_nag(session_context(), lock=lock_file, lambda_python=lambda_python)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `env` over every environment in cdk.json: a new one is tested automatically."""
    if "env" in metafunc.fixturenames:
        metafunc.parametrize("env", list(parse_project(cdk_context()).environments))
