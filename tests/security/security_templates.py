"""The CDK app synthesized for the least-privilege audit, with its cdk-nag acknowledgments.

Built the way `app.py` builds it, for every environment in cdk.json plus a variant that turns
on the options no shipped environment uses (API key auth, alarm e-mail and existing topics,
training in public subnets above the chain start, a registry destroyed with its stack), with construct paths in the template metadata and the nag acknowledgments recorded
(`stacks.components.nag.recording_only`) so the audit can check each wildcard against them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

VARIANT = "variant"
VARIANT_ENVIRONMENT = {
    "promote_from": "dev",
    "infra": {
        "retain_data": False,
        "lambda": {"snapstart": True},
        "api": {"auth": "api_key"},
        "alarms": {
            "topic_email": "ops@example.com",
            "topic_arn": "arn:aws:sns:us-east-1:123456789012:team-pager",
        },
        "network": {"isolated": False},
        "registry": {"kms": True, "removal_policy": "destroy"},
        # Retrains weekly from its own captures (registering in dev, where versions are
        # allocated): the task reads the captures bucket instead of the training data.
        "training": {"source": "capture", "schedule": "cron(0 4 ? * MON *)"},
    },
    "capture": {"sample_rate": 0.5, "exclude": ["account_id", "request_id"]},
    "labels": {"maturity_days": 45, "unlabelled": "exclude"},
}


@dataclass(frozen=True)
class Statement:
    """One IAM statement, where it lives and who it is for."""

    env: str
    stack: str
    logical_id: str
    path: str  # construct path of the policy (aws:cdk:path)
    kind: str  # "role policy", "managed policy", "bucket policy"
    holder: str  # the role(s) or principal it is attached to
    document: dict[str, Any]

    @property
    def allows(self) -> bool:
        return self.document.get("Effect") == "Allow"

    @property
    def actions(self) -> list[str]:
        value = self.document.get("Action", [])
        return [str(a) for a in (value if isinstance(value, list) else [value])]

    @property
    def resources(self) -> list[Any]:
        value = self.document.get("Resource", [])
        return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class AuditedApp:
    templates: dict[tuple[str, str], dict[str, Any]]
    acknowledged: list[tuple[str, str]]
    retain_data: dict[str, bool]
    api_auth: dict[str, str]
    # Environments where some bucket goes with its stack (CDK empties it first): the access logs
    # where retain_data is false, the registry and training data with removal_policy "destroy"
    destroyable: dict[str, bool]
    kms: dict[str, bool]
    # Where each environment's versions are allocated (its promotion chain's start)
    chain_start: dict[str, str]
    # Where each environment's batch runs write, in its training-data bucket
    batch_output: dict[str, str]
    # Environments whose training runs lease the interface endpoints (network.endpoints)
    leased_endpoints: dict[str, bool]

    def stack_templates(self, env: str) -> dict[str, dict[str, Any]]:
        """One environment's templates by stack name (Registry, Inference, Training)."""
        return {stack: t for (e, stack), t in self.templates.items() if e == env}

    @property
    def environments(self) -> list[str]:
        return sorted({env for env, _ in self.templates})

    def resources(self, type_: str) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
        for (env, stack), template in self.templates.items():
            for logical_id, resource in template["Resources"].items():
                if resource["Type"] == type_:
                    yield env, stack, logical_id, resource

    def statements(self) -> list[Statement]:
        found: list[Statement] = []
        for (env, stack), template in self.templates.items():
            for logical_id, resource in template["Resources"].items():
                props = resource.get("Properties", {})
                path = str(resource.get("Metadata", {}).get("aws:cdk:path", ""))
                documents: list[tuple[str, str, dict[str, Any]]] = []
                if resource["Type"] == "AWS::IAM::Policy":
                    documents.append(
                        ("role policy", json.dumps(props.get("Roles")), props["PolicyDocument"])
                    )
                elif resource["Type"] == "AWS::IAM::ManagedPolicy":
                    documents.append(("managed policy", logical_id, props["PolicyDocument"]))
                elif resource["Type"] == "AWS::IAM::Role":
                    for inline in props.get("Policies", []):
                        documents.append(("role policy", logical_id, inline["PolicyDocument"]))
                elif resource["Type"] == "AWS::S3::BucketPolicy":
                    documents.append(("bucket policy", "", props["PolicyDocument"]))
                for kind, holder, document in documents:
                    listed = document["Statement"]
                    for statement in listed if isinstance(listed, list) else [listed]:
                        if kind == "bucket policy":
                            holder = json.dumps(statement.get("Principal"))
                        found.append(
                            Statement(env, stack, logical_id, path, kind, holder, statement)
                        )
        return found


def synthesize(lock: Path, outdir: Path, *, accounts: dict[str, str] | None = None) -> AuditedApp:
    """cdk.json's environments plus the variant; with `accounts`, cdk.json's environments
    only, each in the account given for it."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    import app as cdk_app
    from sds.config import parse_project
    from sds.kernel.lock import LockFile, Pin
    from stacks.components.nag import recording_only

    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    if accounts is None:
        context["environments"][VARIANT] = VARIANT_ENVIRONMENT
    for env, account in (accounts or {}).items():
        context["environments"][env]["infra"]["account"] = account
    context["aws:cdk:enable-path-metadata"] = True
    project = parse_project(context)
    lock.write_text(
        LockFile(
            model=project.model_name,
            pins={env: Pin(version=4, sha256="c" * 64) for env in project.environments},
        ).to_json()
    )
    app = cdk.App(context=context, outdir=str(outdir))
    with recording_only() as acknowledged:
        stages = cdk_app.build(app, lock_path=lock, nag=False)
    templates = {
        (stage.node.id, stack.node.id): Template.from_stack(stack).to_json()
        for stage in stages
        for stack in stage.stacks
    }
    return AuditedApp(
        templates=templates,
        acknowledged=list(acknowledged),
        retain_data={n: e.infra.retain_data for n, e in project.environments.items()},
        api_auth={n: e.infra.api.auth for n, e in project.environments.items()},
        destroyable={
            n: not (e.infra.retain_data and e.infra.registry.retain)
            for n, e in project.environments.items()
        },
        kms={n: e.infra.registry.kms for n, e in project.environments.items()},
        chain_start={n: e.chain_start for n, e in project.environments.items()},
        batch_output={n: e.infra.batch.output_prefix for n, e in project.environments.items()},
        leased_endpoints={
            n: e.infra.network.leased_endpoints for n, e in project.environments.items()
        },
    )
