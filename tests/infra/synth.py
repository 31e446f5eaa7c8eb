"""What the infrastructure tests share besides fixtures: how the session's app is synthesized.

The pins it deploys, the variant environment (options no cdk.json environment uses, synthesized
so their code paths are checked too), the in-process synthesis, the CLI's credential-free
environment, and the nag audit's result type. The fixtures that build them once per session are
in conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

import app as cdk_app
from sds.config import ProjectConfig, parse_project
from sds.kernel.lock import Pin
from stacks.components.nag import recording_only
from stacks.stage import EnvironmentStage

ROOT = Path(__file__).resolve().parents[2]

CDK_CLI = ROOT / "node_modules" / ".bin" / "cdk"

# Pins the session app deploys: every cdk.json environment pinned with the alert rate its
# version's manifest expects (as `make cost` prices them: serving a model, alert-rate alarms
# included), the variant deliberately not (it must still synthesize and answer 503 at run time).
DEV_PIN = Pin(version=3, sha256="a" * 64, expected_alert_rate=0.02)
STAGING_PIN = Pin(version=5, sha256="d" * 64, expected_alert_rate=0.0125)
PROD_PIN = Pin(version=7, sha256="b" * 64, expected_alert_rate=0.01)
PINS = {"dev": DEV_PIN, "staging": STAGING_PIN, "prod": PROD_PIN}


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
        # Retrains weekly from its own captures (registering in dev, where versions are
        # allocated): the task reads the captures bucket instead of the training data.
        "training": {
            "source": "capture",
            "schedule": "cron(0 4 ? * MON *)",
            "ephemeral_storage_gib": 60,
        },
        "batch": {
            "max_concurrency": 7,
            "tolerated_failure_percent": 5,
            "memory_mb": 4096,
            "output_prefix": "scores/",
        },
    },
    "capture": {"sample_rate": 0.5, "exclude": ["account_id", "request_id"]},
    "labels": {"maturity_days": 45, "unlabelled": "exclude"},
    # The volume alarm: opt-in, so no cdk.json environment has it (nor its idle cost).
    "monitor": {"min_daily_payments": 100},
}


@dataclass(frozen=True)
class NagAudit:
    """cdk-nag run on an app built without acknowledgments, next to the ones it would apply."""

    acknowledged: list[tuple[str, str]]
    findings: set[tuple[str, str]]

    @staticmethod
    def covers(scope_path: str, resource_path: str) -> bool:
        return resource_path == scope_path or resource_path.startswith(scope_path + "/")

    def unacknowledged(self, within: str = "") -> list[tuple[str, str]]:
        """Findings (path, rule) under `within` with no matching acknowledgment on them or on a
        parent construct."""
        return sorted(
            (path, rule)
            for path, rule in self.findings
            if within in path
            and not any(rule == f and self.covers(scope, path) for scope, f in self.acknowledged)
        )

    def stale(self, within: str = "") -> list[tuple[str, str]]:
        """Acknowledgments (scope, rule) under `within` that match no finding: they would
        silently hide a future one."""
        return sorted(
            (scope, rule)
            for scope, rule in self.acknowledged
            if within in scope + "/"
            and not any(rule == f and self.covers(scope, path) for path, f in self.findings)
        )


def audit_nag(context: dict[str, Any], *, lock: Path, lambda_python: str) -> NagAudit:
    """cdk-nag over the construct tree of the app built from `context` with acknowledgments
    recorded, not applied.

    No synthesis is needed: the packs walk the construct tree, and every cross-stack value here
    is an explicit `Fn::GetStackOutput`, so nothing waits for the prepare phase.
    """
    app = cdk.App(context=context)
    with recording_only() as acknowledged:
        cdk_app.build(app, lock_path=lock, lambda_python=lambda_python, nag=False)
    findings = {
        (resource.construct_path, violation.rule_name)
        for pack in (pack_type(app) for pack_type in cdk_app.NAG_PACKS)
        for violation in pack.validate_scope(app).violations
        for resource in violation.violating_resources
    }
    return NagAudit(list(acknowledged), findings)
