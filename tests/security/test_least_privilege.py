"""Least privilege, asserted on the synthesized templates of every environment (and a variant).

Given the CDK app synthesized for dev, staging, prod and a variant with the optional features on,
when every IAM statement, bucket policy, API method and storage resource is read back from the
templates, then: every API method requires authorization; the function can only read version
objects; training can never touch an alias or delete; only the environment's promoter policy can
move its aliases and switch its Lambda alias; no statement allows a wildcard action, and every
wildcard resource carries a cdk-nag acknowledgment on the construct that holds it; storage is
encrypted and reachable over TLS only.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from security_report import record
from security_templates import AuditedApp, Statement

from stacks.components.nag import _render

WRITE_OR_DELETE = ("s3:Put", "s3:Delete", "s3:Copy", "s3:Replicate", "s3:Restore", "s3:Abort")
AUTO_DELETE_PROVIDER = "CustomS3AutoDeleteObjectsCustomResourceProviderRole"


def rendered(statement: Statement) -> list[str]:
    return [_render(resource) for resource in statement.resources]


def by_role(app: AuditedApp, env: str, role_prefix: str) -> list[Statement]:
    """Allow statements of the role policies whose role logical id starts with `role_prefix`."""
    return [
        s
        for s in app.statements()
        if s.env == env and s.allows and s.kind == "role policy" and role_prefix in s.holder
    ]


def test_every_environment_is_audited(audited_app: AuditedApp) -> None:
    assert audited_app.environments == ["dev", "prod", "staging", "variant"]
    record("least privilege: audited", "environments", len(audited_app.environments))
    record("least privilege: audited", "templates", len(audited_app.templates))
    record(
        "least privilege: audited",
        "IAM and bucket-policy statements",
        len(audited_app.statements()),
    )


def test_every_api_method_requires_authorization(audited_app: AuditedApp) -> None:
    methods = list(audited_app.resources("AWS::ApiGateway::Method"))
    assert methods
    for env, _, logical_id, method in methods:
        props = method["Properties"]
        if audited_app.api_auth[env] == "iam":
            assert props["AuthorizationType"] == "AWS_IAM", (env, logical_id)
        else:
            assert props.get("ApiKeyRequired") is True, (env, logical_id)
    assert not list(audited_app.resources("AWS::Lambda::Url")), "a function URL bypasses the API"
    for env, _, logical_id, permission in audited_app.resources("AWS::Lambda::Permission"):
        props = permission["Properties"]
        assert props["Principal"] == "apigateway.amazonaws.com", (env, logical_id)
        assert "execute-api" in json.dumps(props["SourceArn"]), (env, logical_id)
    record("least privilege: audited", "API methods, all authorized", len(methods))


@pytest.mark.parametrize("env", ["dev", "staging", "prod", "variant"])
def test_the_function_can_only_read_version_objects(audited_app: AuditedApp, env: str) -> None:
    statements = by_role(audited_app, env, "ModelRole")
    s3 = [s for s in statements if any(a.startswith("s3:") for a in s.actions)]
    assert len(s3) == 1
    assert s3[0].actions == ["s3:GetObject"]
    assert rendered(s3[0]) == [
        f'{{"Fn::GetStackOutput":{{"StackName":"{env}-Registry","OutputName":"RegistryBucketArn"}}}}'
        "/models/fraud/versions/*"
    ]
    others = {a for s in statements for a in s.actions if not a.startswith("s3:")}
    assert others <= {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }, others


@pytest.mark.parametrize("env", ["dev", "staging", "prod", "variant"])
def test_training_cannot_write_aliases_or_delete_anything(
    audited_app: AuditedApp, env: str
) -> None:
    statements = by_role(audited_app, env, "JobTaskRole")
    assert statements
    for statement in statements:
        for action in statement.actions:
            assert "Delete" not in action and "*" not in action, action
        writes = [a for a in statement.actions if a.startswith(WRITE_OR_DELETE)]
        for resource in rendered(statement):
            if writes:
                assert resource.endswith(("/models/fraud/versions/*", "/models/fraud/events/*")), (
                    resource
                )
            assert "/aliases/" not in resource
    assert not [
        s for s in by_role(audited_app, env, "JobTaskRole") if "lambda:" in json.dumps(s.actions)
    ]


def test_only_the_promoter_policy_moves_aliases_and_switches_the_lambda_alias(
    audited_app: AuditedApp,
) -> None:
    movers: list[tuple[str, str, str]] = []
    for statement in audited_app.statements():
        if not statement.allows:
            continue
        puts_aliases = any(a in ("s3:PutObject", "s3:*", "*") for a in statement.actions) and any(
            "/aliases/" in r
            or (
                r.endswith(("/*", "*"))
                and "/versions/" not in r
                and "/events/" not in r
                and "/training-data/" not in r
                and "/registry/" not in r
            )
            for r in rendered(statement)
        )
        updates_alias = any(a in ("lambda:UpdateAlias", "lambda:*", "*") for a in statement.actions)
        if puts_aliases or updates_alias:
            movers.append((statement.env, statement.kind, statement.logical_id))
    expected = {
        (env, "managed policy", "PromoterPolicyE707AE28") for env in audited_app.environments
    }
    assert set(movers) == expected, movers
    # Each environment's promoter policy reaches that environment's registry and function only.
    for statement in audited_app.statements():
        if statement.kind == "managed policy":
            text = json.dumps(statement.document)
            for other in audited_app.environments:
                if other != statement.env:
                    assert f'"{other}-Registry"' not in text and f"/sds/{other}/" not in text
            assert not any("Delete" in a for a in statement.actions), statement.actions
    record(
        "least privilege: audited", "policies that can move an alias (1 per env)", len(set(movers))
    )


def test_the_only_aws_managed_policies_are_acknowledged(audited_app: AuditedApp) -> None:
    acknowledged = {finding for _, finding in audited_app.acknowledged}
    for env, _, logical_id, role in audited_app.resources("AWS::IAM::Role"):
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            found = re.search(r"policy/(?:service-role/)?([A-Za-z0-9-]+)", json.dumps(arn))
            assert found, arn
            name = found.group(1)
            if name == "AWSLambdaBasicExecutionRole":
                continue  # CDK's own custom-resource providers: writing their logs only
            assert name == "AWSCodeDeployRoleForLambdaLimited", (env, logical_id, name)
            assert any(
                name in finding
                for finding in acknowledged
                if finding.startswith("AwsSolutions-IAM4")
            )


def test_no_wildcard_action_and_every_wildcard_resource_is_acknowledged(
    audited_app: AuditedApp,
) -> None:
    unacknowledged: list[str] = []
    exceptions = 0
    for statement in audited_app.statements():
        if not statement.allows:
            continue  # Deny statements (TLS-only) may be as broad as they like
        if statement.kind == "bucket policy":
            # CDK's auto-delete-objects provider empties the bucket when a stack that does not
            # retain data is destroyed; nothing else gets a bucket-policy grant but S3 logging.
            if AUTO_DELETE_PROVIDER in statement.holder:
                assert not audited_app.retain_data[statement.env], statement
                exceptions += 1
                continue
            assert statement.holder == '{"Service": "logging.s3.amazonaws.com"}', statement
            assert statement.actions == ["s3:PutObject"]
            continue
        for action in statement.actions:
            if "*" in action:
                unacknowledged.append(f"{statement.path}: action {action}")
        for resource in rendered(statement):
            if "*" not in resource:
                continue
            finding = f"AwsSolutions-IAM5[Resource::{resource}]"
            owners = [path for path, f in audited_app.acknowledged if f == finding]
            if not any(statement.path.startswith(path + "/") for path in owners):
                unacknowledged.append(f"{statement.path}: resource {resource}")
    assert unacknowledged == []
    record(
        "least privilege: audited", "dev-only auto-delete grants (retain_data false)", exceptions
    )


def test_nothing_outside_dev_like_environments_can_delete(audited_app: AuditedApp) -> None:
    for statement in audited_app.statements():
        if statement.allows and any("Delete" in a for a in statement.actions):
            assert not audited_app.retain_data[statement.env], statement
            assert AUTO_DELETE_PROVIDER in statement.holder, statement


def test_storage_is_encrypted_private_and_tls_only(audited_app: AuditedApp) -> None:
    policies: dict[tuple[str, str], dict[str, Any]] = {}
    for env, stack, _, policy in audited_app.resources("AWS::S3::BucketPolicy"):
        policies[(env, stack, json.dumps(policy["Properties"]["Bucket"]))] = policy["Properties"]
    buckets = list(audited_app.resources("AWS::S3::Bucket"))
    for env, stack, logical_id, bucket in buckets:
        props = bucket["Properties"]
        rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, (env, logical_id)
        policy = policies[(env, stack, json.dumps({"Ref": logical_id}))]
        statements = policy["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            and s["Action"] == "s3:*"
            for s in statements
        ), (env, logical_id)
    topics = list(audited_app.resources("AWS::SNS::Topic"))
    for env, _, logical_id, _topic in topics:
        tls = [
            p
            for _, _, _, p in audited_app.resources("AWS::SNS::TopicPolicy")
            if {"Ref": logical_id} in p["Properties"]["Topics"]
        ]
        document = json.dumps(tls[0]["Properties"]["PolicyDocument"]) if tls else ""
        assert '"aws:SecureTransport": "false"' in document, (env, logical_id)
    for _env, _, _id, function in audited_app.resources("AWS::Lambda::Function"):
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        for name in variables:
            assert not any(s in name.upper() for s in ("SECRET", "PASSWORD", "TOKEN")), name
    record("least privilege: audited", "buckets encrypted + TLS-only", len(buckets))
    record("least privilege: audited", "SNS topics TLS-only", len(topics))
