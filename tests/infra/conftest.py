"""Infrastructure test fixtures: the whole CDK app, synthesized once per session.

The machine running the suite has 2 cores, so the expensive things happen once: the Lambda bundle
is built (or taken from build/), the app is synthesized in-process for the assertions, and the
real CDK CLI (`npx --no-install cdk synth`) runs in the background meanwhile, with no AWS
credentials and a throwaway CDK_HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # app.py is a script at the repository root, not a package
    sys.path.insert(0, str(ROOT))

import app as cdk_app  # noqa: E402
from sds.config import ProjectConfig, parse_project  # noqa: E402
from sds.kernel.lock import LockFile, Pin  # noqa: E402
from stacks.bundling import build_bundle, find_python  # noqa: E402
from stacks.components.nag import recording_only  # noqa: E402
from stacks.stage import EnvironmentStage  # noqa: E402

CDK_CLI = ROOT / "node_modules" / ".bin" / "cdk"

# Pins the session app deploys: dev and prod pinned, staging deliberately not (it must still
# synthesize and answer 503 at run time).
DEV_PIN = Pin(version=3, sha256="a" * 64)
PROD_PIN = Pin(version=7, sha256="b" * 64)


@dataclass(frozen=True)
class SynthesizedApp:
    app: cdk.App
    project: ProjectConfig
    stages: dict[str, EnvironmentStage]
    outdir: Path

    def template(self, env: str, stack: str) -> Template:
        return _template(self, env, stack)

    def templates(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (env, stack.node.id): self.template(env, stack.node.id).to_json()
            for env, stage in self.stages.items()
            for stack in stage.stacks
        }


_TEMPLATES: dict[tuple[int, str, str], Template] = {}


def _template(synth: SynthesizedApp, env: str, stack: str) -> Template:
    key = (id(synth.app), env, stack)
    if key not in _TEMPLATES:
        found = {s.node.id: s for s in synth.stages[env].stacks}
        _TEMPLATES[key] = Template.from_stack(found[stack])
    return _TEMPLATES[key]


def cdk_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    return context


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
    path.write_text(LockFile(model=model, pins={"dev": DEV_PIN, "prod": PROD_PIN}).to_json())
    return path


def cli_environment(cdk_home: Path) -> dict[str, str]:
    """The environment of a machine with no AWS credentials (and a private CDK cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        CDK_HOME=str(cdk_home),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(cdk_home / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(cdk_home / "no-credentials"),
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        CDK_DISABLE_VERSION_CHECK="1",
    )
    return env


@dataclass
class CliSynth:
    process: subprocess.Popen[str] | None
    outdir: Path
    log: Path
    missing: str = ""

    def wait(self) -> int:
        if self.process is None:
            pytest.fail(self.missing)
        return self.process.wait(timeout=600)


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


def synthesize(
    outdir: Path, *, lock: Path, lambda_python: str, context: dict[str, Any] | None = None
) -> SynthesizedApp:
    context = dict(context if context is not None else cdk_context())
    # What the CLI passes to the app, so templates match `cdk synth` byte for byte.
    context.update(
        {
            "aws:cdk:enable-path-metadata": True,
            "aws:cdk:enable-asset-metadata": True,
            "aws:cdk:version-reporting": True,
        }
    )
    app = cdk.App(context=context, outdir=str(outdir))
    stages = cdk_app.build(app, lock_path=lock, lambda_python=lambda_python, nag=False)
    app.synth()
    return SynthesizedApp(
        app=app,
        project=parse_project(context),
        stages={stage.node.id: stage for stage in stages},
        outdir=outdir,
    )


def session_context() -> dict[str, Any]:
    """cdk.json's environments plus the variant, so its code paths are synthesized too."""
    context = cdk_context()
    context["environments"][VARIANT] = VARIANT_ENVIRONMENT
    return context


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


# Options no cdk.json environment uses today, so their code paths are synthesized and checked too.
VARIANT = "variant"
VARIANT_ENVIRONMENT = {
    "promote_from": "dev",
    "infra": {
        "retain_data": False,
        "dashboard": False,
        "lambda": {"snapstart": True},
        "api": {"auth": "api_key"},
        "deployment": {"strategy": "linear_10_percent_every_2_minutes"},
        "alarms": {
            "topic_email": "ops@example.com",
            "topic_arn": "arn:aws:sns:us-east-1:123456789012:team-pager",
        },
        "network": {"isolated": False, "azs": 1},
        "registry": {"kms": True, "removal_policy": "destroy"},
    },
}


@dataclass(frozen=True)
class NagAudit:
    """cdk-nag run on an app built without acknowledgments, next to the ones it would apply."""

    acknowledged: list[tuple[str, str]]
    findings: set[tuple[str, str]]


@pytest.fixture(scope="session")
def nag_audit(lock_file: Path, lambda_python: str) -> NagAudit:
    """cdk-nag over the construct tree built with acknowledgments recorded, not applied.

    No synthesis is needed: the packs walk the construct tree, and every cross-stack value here
    is an explicit `Fn::GetStackOutput`, so nothing waits for the prepare phase.
    """
    app = cdk.App(context=session_context())
    with recording_only() as acknowledged:
        cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python, nag=False)
    findings = {
        (resource.construct_path, violation.rule_name)
        for pack in (pack_type(app) for pack_type in cdk_app.NAG_PACKS)
        for violation in pack.validate_scope(app).violations
        for resource in violation.violating_resources
    }
    return NagAudit(list(acknowledged), findings)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `env` over every environment in cdk.json: a new one is tested automatically."""
    if "env" in metafunc.fixturenames:
        metafunc.parametrize("env", list(parse_project(cdk_context()).environments))
